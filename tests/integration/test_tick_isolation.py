"""One failing item never stops the tick for everyone: a timer, a lost attempt or a scheduled fire
whose step raises is logged, counted and skipped (and postponed, so that it is neither retried in a
hot loop nor holds back the others tick after tick), and every other item and part goes on."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from orchestrator.engine import TaskClaimed
from tests.support import shell
from workers.coordination import advance as coordinator
from workers.coordination import runs, schedules, tick
from workers.execution.executor import Executor
from workers.messaging.dispatch import TASK_QUEUE
from workers.store import missions
from workers.store.projects import ensure_project
from workers.support import metrics as worker_metrics
from workers.support.clock import utcnow
from workers.wiring import Services

LIMITS = missions.Limits()


@pytest.fixture
def executor(services: Services) -> Executor:
    return shell.executor(services, "test-worker")


@pytest.fixture
def counted(services: Services) -> Iterator[None]:
    """The isolated-failure counters of this process, flushed to the test Redis."""
    worker_metrics._recorder.reset()
    services.redis.delete(worker_metrics.ISOLATED_KEY)
    worker_metrics.configure(services.redis)
    yield
    worker_metrics._recorder.reset()
    worker_metrics.configure(None)


def _isolated() -> dict[str, int]:
    worker_metrics.flush()
    client = worker_metrics._recorder._client
    return worker_metrics.read_isolated(client)


def _start(services: Services, name: str, task: dict[str, Any], script: list[dict[str, Any]]) -> tuple[str, str]:
    document = {
        "name": name,
        "tasks": [{"title": "A", "description": "d", "assignTo": "a", **task}],
        "team": {
            "name": "t",
            "volatile": True,
            "agents": [{"name": "a", "role": "r", "model": "scripted/x", "script": script}],
        },
    }
    with services.transaction() as conn:
        project = ensure_project(conn, "p")
        mission = missions.create_mission(conn, project, document, LIMITS)
        run_id, *_ = runs.execute(shell.uow(conn), project, mission.id, LIMITS, utcnow())
    return run_id, mission.tasks[0].id


def _with_retry_timer(services: Services, executor: Executor, name: str) -> str:
    """A run whose first attempt failed: its retry timer waits in ``timers``."""
    run_id, task_id = _start(
        services,
        name,
        {"maxRetries": 1, "retryPolicy": {"backoff": 30}},
        [{"fail": "first try fails"}, {"output": "ok"}],
    )
    assert executor.run_attempt(run_id, task_id, 1) == "failed"
    return run_id


def _with_lost_worker(services: Services, name: str) -> str:
    run_id, task_id = _start(services, name, {}, [{"output": "ok"}])
    with services.transaction() as conn:
        conn.execute(
            "UPDATE attempts SET status = 'running', heartbeat_at = now() - interval '1 hour' WHERE run_id = %s",
            (run_id,),
        )
        coordinator.step(conn, run_id, TaskClaimed(task_id, 1, "dead-worker"), utcnow())
    return run_id


def _raise_in_steps_of(monkeypatch: pytest.MonkeyPatch, run_id: str, error: Exception) -> list[str]:
    """The locking step (the tick's) raises ``error`` for ``run_id``; one entry per raise."""
    raised: list[str] = []
    original = coordinator.step

    def step(conn: Any, rid: str, event: Any, *args: Any, **kwargs: Any) -> Any:
        if rid == run_id:
            raised.append(type(event).__name__)
            raise error
        return original(conn, rid, event, *args, **kwargs)

    monkeypatch.setattr(coordinator, "step", step)
    return raised


def _timers(db: psycopg.Connection) -> dict[str, datetime]:
    return {r["run_id"]: r["due_at"] for r in db.execute("SELECT run_id, due_at FROM timers")}


def test_a_timer_whose_step_raises_stops_neither_the_other_timers_nor_the_reaper_nor_the_resends(
    services: Services, executor: Executor, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch, counted: None
) -> None:
    broken = _with_retry_timer(services, executor, "broken")
    healthy = _with_retry_timer(services, executor, "healthy")
    lost = _with_lost_worker(services, "lost")
    unsent, _task_id = _start(services, "unsent", {}, [{"output": "ok"}])  # its message was never sent
    due = _timers(db)
    # The broken run's timer comes first, so that it would be taken again and again.
    db.execute("UPDATE timers SET due_at = due_at - interval '1 minute' WHERE run_id = %s", (broken,))
    services.redis.delete(TASK_QUEUE)  # the healthy run's retry is not sent yet; lose every message
    raised = _raise_in_steps_of(monkeypatch, broken, OverflowError("date value out of range"))
    now = max(due.values()) + timedelta(seconds=1)

    report = tick.tick(executor.coordinator, executor.coordinator.sender, services.settings, now)

    assert raised == ["RetryDue"]  # tried once, not in a hot loop
    assert report.timers == 1 and report.lost == 1 and report.failed == 1
    assert report.resent == 1  # the unsent run's attempt
    attempts = {
        (r["run_id"], r["attempt"]): r["status"] for r in db.execute("SELECT run_id, attempt, status FROM attempts")
    }
    assert attempts[(healthy, 2)] == "queued"  # its retry fired
    assert attempts[(lost, 1)] == "lost" and attempts[(lost, 2)] == "queued"
    assert (broken, 2) not in attempts and attempts[(unsent, 1)] == "queued"
    # The broken timer was not fired: it is postponed, not dropped, and not taken again at once.
    assert _timers(db) == {broken: now + tick.FAILED_TIMER_DELAY}
    assert _isolated()["timers"] == 1

    again = tick.tick(executor.coordinator, executor.coordinator.sender, services.settings, now + timedelta(seconds=1))
    assert (again.timers, again.failed) == (0, 0) and raised == ["RetryDue"]
    later = now + tick.FAILED_TIMER_DELAY + timedelta(seconds=1)
    retried = tick.tick(executor.coordinator, executor.coordinator.sender, services.settings, later)
    assert retried.failed == 1 and raised == ["RetryDue", "RetryDue"]  # once a delay, not once a tick
    monkeypatch.undo()
    fixed = tick.tick(
        executor.coordinator, executor.coordinator.sender, services.settings, later + tick.FAILED_TIMER_DELAY
    )
    assert fixed.timers == 1 and fixed.failed == 0
    assert (
        db.execute("SELECT status FROM attempts WHERE run_id = %s AND attempt = 2", (broken,)).fetchone()["status"]
        == "queued"
    )


def test_a_timer_whose_step_meets_a_database_failure_stays_due_and_the_next_parts_run(
    services: Services, executor: Executor, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch, counted: None
) -> None:
    broken = _with_retry_timer(services, executor, "broken")
    lost = _with_lost_worker(services, "lost")
    due = _timers(db)
    raised = _raise_in_steps_of(monkeypatch, broken, psycopg.OperationalError("server closed the connection"))
    now = max(due.values()) + timedelta(seconds=1)

    report = tick.tick(executor.coordinator, executor.coordinator.sender, services.settings, now)

    assert raised == ["RetryDue"] and report.timers == 0 and report.failed == 1
    assert _timers(db) == {broken: due[broken]}  # rolled back: due as it was, not postponed
    assert report.lost == 1  # the next part ran
    assert (
        db.execute("SELECT status FROM attempts WHERE run_id = %s AND attempt = 1", (lost,)).fetchone()["status"]
        == "lost"
    )
    assert _isolated()["timers"] == 1


def test_a_lost_attempt_whose_step_raises_does_not_stop_the_other_lost_attempts(
    services: Services, executor: Executor, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch, counted: None
) -> None:
    broken = _with_lost_worker(services, "broken")
    other = _with_lost_worker(services, "other")
    db.execute("UPDATE attempts SET heartbeat_at = heartbeat_at - interval '1 minute' WHERE run_id = %s", (broken,))
    raised = _raise_in_steps_of(monkeypatch, broken, ValueError("no"))
    now = utcnow()

    report = tick.tick(executor.coordinator, executor.coordinator.sender, services.settings, now)

    assert report.lost == 1 and report.failed == 1 and raised == ["WorkerLost"]
    statuses = {r["run_id"]: r["status"] for r in db.execute("SELECT run_id, status FROM attempts WHERE attempt = 1")}
    assert statuses == {broken: "running", other: "lost"}
    # Postponed: looked at again one worker-lost window later, not first in line at every tick.
    assert tick.tick(executor.coordinator, executor.coordinator.sender, services.settings, now).failed == 0
    later = now + timedelta(seconds=services.settings.worker_lost_seconds + 1)
    assert tick.tick(executor.coordinator, executor.coordinator.sender, services.settings, later).failed == 1
    assert _isolated()["lost_workers"] == 2


def test_a_part_whose_scan_fails_does_not_stop_the_next_parts(
    services: Services, executor: Executor, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch, counted: None
) -> None:
    _start(services, "unsent", {}, [{"output": "ok"}])  # its message was never sent

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("scan failed")

    monkeypatch.setattr(tick.attempts, "lost_running", broken)
    later = utcnow() + timedelta(seconds=services.settings.requeue_seconds + 1)
    report = tick.tick(executor.coordinator, executor.coordinator.sender, services.settings, later)
    assert report.failed == 1 and report.resent == 1
    assert _isolated()["lost_workers"] == 1


def weekly(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "prompt": "Write the weekly report.",
        "schedule": "0 9 * * MON",
        "timezone": "Europe/Rome",
        "tasks": [{"title": "Write", "description": "Write it", "assignTo": "w"}],
        "team": {"name": "t", "volatile": True, "agents": [{"name": "w", "model": "scripted/w"}]},
    }


def _scheduled(client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, name: str, at: datetime) -> str:
    mission = client.post("/v1/missions", json=weekly(name), headers=auth).get_json()
    db.execute("UPDATE missions SET next_run_at = %s WHERE id = %s", (at, mission["id"]))
    return str(mission["id"])


def _runs_of(db: psycopg.Connection) -> dict[str, int]:
    return {r["mission_id"]: r["n"] for r in db.execute("SELECT mission_id, count(*) AS n FROM runs GROUP BY 1")}


def test_a_mission_whose_fire_raises_does_not_stop_another_missions_fire(
    client: FlaskClient,
    auth: dict[str, str],
    services: Services,
    db: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    counted: None,
) -> None:
    fire_at = datetime(2026, 11, 23, 8, tzinfo=UTC)
    broken = _scheduled(client, auth, db, "broken", fire_at - timedelta(minutes=1))  # first in line
    healthy = _scheduled(client, auth, db, "healthy", fire_at)
    original = schedules.plan_fires
    planned: list[str] = []

    def plan_fires(schedule: str, timezone: str | None, next_run_at: datetime, *args: Any, **kwargs: Any) -> Any:
        if next_run_at == fire_at - timedelta(minutes=1):
            planned.append("broken")
            raise OverflowError("date value out of range")
        return original(schedule, timezone, next_run_at, *args, **kwargs)

    monkeypatch.setattr(schedules, "plan_fires", plan_fires)
    now = fire_at + timedelta(seconds=1)
    report = tick.tick(shell.quiet_coordinator(services), services.dispatcher, services.settings, now)

    assert report.scheduled == 1 and report.failed == 1 and planned == ["broken"]
    assert _runs_of(db) == {healthy: 1}
    next_runs = {r["id"]: r["next_run_at"] for r in db.execute("SELECT id, next_run_at FROM missions")}
    assert next_runs[broken] == now + schedules.FAILED_FIRE_DELAY  # postponed: the others go first meanwhile
    assert tick.tick(shell.quiet_coordinator(services), services.dispatcher, services.settings, now).failed == 0
    assert _isolated()["schedules"] == 1


def test_a_scheduled_run_that_cannot_start_skips_its_fire_and_the_other_missions_fire(
    client: FlaskClient,
    auth: dict[str, str],
    services: Services,
    db: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    counted: None,
) -> None:
    fire_at = datetime(2026, 11, 23, 8, tzinfo=UTC)
    broken = _scheduled(client, auth, db, "broken", fire_at - timedelta(minutes=1))
    healthy = _scheduled(client, auth, db, "healthy", fire_at)
    original = schedules.runs.execute

    def execute(uow: Any, project_id: str, mission_id: str, *args: Any, **kwargs: Any) -> Any:
        if mission_id == broken:
            raise OverflowError("date value out of range")
        return original(uow, project_id, mission_id, *args, **kwargs)

    monkeypatch.setattr(schedules.runs, "execute", execute)
    now = fire_at + timedelta(seconds=1)
    report = tick.tick(shell.quiet_coordinator(services), services.dispatcher, services.settings, now)

    assert report.scheduled == 1 and report.failed == 1
    assert _runs_of(db) == {healthy: 1}
    fires = client.get(f"/v1/missions/{broken}/fires", headers=auth).get_json()
    assert ("skipped", "error: the run could not start (OverflowError)") in [(f["status"], f["reason"]) for f in fires]
    assert "started" not in [f["status"] for f in fires]
    next_run = db.execute("SELECT next_run_at FROM missions WHERE id = %s", (broken,)).fetchone()["next_run_at"]
    assert next_run == datetime(2026, 11, 30, 8, tzinfo=UTC)  # the schedule goes on
    assert _isolated()["schedules"] == 1


def test_isolated_failures_are_exposed_on_the_metrics(client: FlaskClient, services: Services, counted: None) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    worker_metrics.count_isolated("timers")
    worker_metrics.count_isolated("timers")
    worker_metrics.count_isolated("wakeup_hub")
    worker_metrics.flush()
    answer = client.get("/metrics")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.get_data(as_text=True))
        for s in family.samples
    }
    assert samples[("missions_isolated_failures_total", (("part", "timers"),))] == 2
    assert samples[("missions_isolated_failures_total", (("part", "wakeup_hub"),))] == 1
    assert samples[("missions_isolated_failures_total", (("part", "lost_messages"),))] == 0  # every part shown


def test_the_tick_deletes_expired_idempotency_keys_and_a_failure_there_is_isolated(
    services: Services, executor: Executor, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch, counted: None
) -> None:
    project = db.execute("INSERT INTO projects (id, name) VALUES ('prj_i', 'i') RETURNING id").fetchone()["id"]
    db.execute(
        "INSERT INTO idempotency_keys (project_id, key, request_hash, status, expires_at)"
        " SELECT %s, 'k' || n, '\\x00', 200, now() - interval '1 second' FROM generate_series(1, 3) n",
        (project,),
    )
    report = tick.tick(executor.coordinator, executor.coordinator.sender, services.settings, utcnow())
    assert report.expired_keys == 3 and report.failed == 0
    assert db.execute("SELECT count(*) AS n FROM idempotency_keys").fetchone()["n"] == 0

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("delete failed")

    monkeypatch.setattr(tick.idempotency, "delete_expired", broken)
    _start(services, "unsent", {}, [{"output": "ok"}])
    later = utcnow() + timedelta(seconds=services.settings.requeue_seconds + 1)
    report = tick.tick(executor.coordinator, executor.coordinator.sender, services.settings, later)
    assert report.failed == 1 and report.resent == 1
    assert _isolated()["idempotency_keys"] == 1
