"""The shell's delivery guarantees against real Postgres and Redis: duplicate deliveries, racing
coordinator steps, and the tick's repairs."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from orchestrator.engine import TaskClaimed, TaskFinished
from tests.support import shell
from workers.coordination import advance as coordinator
from workers.coordination import runs
from workers.coordination.tick import tick
from workers.execution.executor import Executor
from workers.messaging.dispatch import TASK_QUEUE
from workers.store import missions
from workers.store import run_state as run_store
from workers.store.projects import ensure_project
from workers.support.clock import utcnow
from workers.wiring import Services

LIMITS = missions.Limits()


def _mission(tasks: list[dict[str, Any]], script: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    agent: dict[str, Any] = {"name": "a", "role": "r", "model": "scripted/x"}
    if script:
        agent["script"] = script
    for task in tasks:
        task.setdefault("description", "d")
        task.setdefault("assignTo", "a")
    return {"name": "m", "tasks": tasks, "team": {"name": "t", "volatile": True, "agents": [agent]}}


def _start(services: Services, document: dict[str, Any]) -> tuple[str, dict[str, str], coordinator.AfterCommit]:
    with services.transaction() as conn:
        project = ensure_project(conn, "p")
        mission = missions.create_mission(conn, project, document, LIMITS)
        run_id, outcome, *_ = runs.execute(shell.uow(conn), project, mission.id, LIMITS, utcnow())
    return run_id, {t.title: t.id for t in mission.tasks}, outcome


def _queue_length(services: Services) -> int:
    return int(services.redis.llen(TASK_QUEUE))


@pytest.fixture
def executor(services: Services) -> Executor:
    return shell.executor(services, "test-worker")


def test_a_duplicate_delivery_of_one_attempt_runs_the_agent_once(
    services: Services, executor: Executor, db: psycopg.Connection
) -> None:
    run_id, ids, _ = _start(services, _mission([{"title": "A"}], [{"outputChunks": ["x", "y"]}]))
    results: list[str] = []
    barrier = threading.Barrier(2)

    def deliver() -> None:
        barrier.wait()
        results.append(executor.run_attempt(run_id, ids["A"], 1))

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(r.split(":")[0] for r in results) == ["finished", "not claimed"]
    outputs = db.execute(
        "SELECT count(*) AS n FROM events WHERE run_id = %s AND type = 'task:output'", (run_id,)
    ).fetchone()
    assert outputs["n"] == 2  # the two chunks, once
    assert executor.run_attempt(run_id, ids["A"], 1).startswith("not claimed")
    row = db.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()
    assert row["status"] == "completed"


def test_two_racing_steps_of_one_run_start_the_join_task_exactly_once(services: Services, database_url: str) -> None:
    run_id, ids, _ = _start(
        services, _mission([{"title": "A"}, {"title": "B"}, {"title": "C", "dependsOn": ["A", "B"]}])
    )
    now = utcnow()
    with services.transaction() as conn:
        for title in ("A", "B"):
            coordinator.step(conn, run_id, TaskClaimed(ids[title], 1, "w"), now)
    outcomes: list[coordinator.AfterCommit | None] = []
    barrier = threading.Barrier(2)

    def finish(title: str) -> None:
        with psycopg.connect(database_url, row_factory=dict_row) as conn:
            barrier.wait()
            with conn.transaction():
                outcomes.append(coordinator.step(conn, run_id, TaskFinished(ids[title], 1, title), utcnow()))

    threads = [threading.Thread(target=finish, args=(t,)) for t in ("A", "B")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    started = [s.task_id for o in outcomes if o for s in o.start]
    assert started == [ids["C"]]
    with services.transaction() as conn:
        stored = run_store.load(conn, run_id)
        assert stored is not None
        state = stored.state
        versions = conn.execute("SELECT version FROM runs WHERE id = %s", (run_id,)).fetchone()
        attempts = conn.execute(
            "SELECT count(*) AS n FROM attempts WHERE run_id = %s AND task_id = %s", (run_id, ids["C"])
        ).fetchone()
        events = [r["id"] for r in conn.execute("SELECT id FROM events WHERE run_id = %s ORDER BY id", (run_id,))]
    assert {t.title: str(t.status) for t in state.tasks.values()} == {"A": "completed", "B": "completed", "C": "queued"}
    assert versions["version"] == 4  # two claims, two finishes
    assert attempts["n"] == 1
    assert events == sorted(events)


def test_an_enqueue_lost_after_commit_is_repaired_by_the_tick(services: Services, executor: Executor) -> None:
    _run_id, ids, outcome = _start(services, _mission([{"title": "A"}]))
    assert [s.task_id for s in outcome.start] == [ids["A"]]
    # The process "crashed" after commit: the outcome is never dispatched.
    assert _queue_length(services) == 0
    soon = tick(executor.coordinator, executor.coordinator.sender, services.settings, utcnow())
    assert soon.resent == 0  # too young to be called lost
    later = utcnow() + timedelta(seconds=services.settings.requeue_seconds + 1)
    report = tick(executor.coordinator, executor.coordinator.sender, services.settings, later)
    assert report.resent == 1 and _queue_length(services) == 1
    again = tick(executor.coordinator, executor.coordinator.sender, services.settings, later)
    assert again.resent == 0  # the queue is not empty: the attempt is waiting, not lost


def test_a_redis_restart_that_empties_the_queue_is_repaired_by_the_tick(services: Services, executor: Executor) -> None:
    _run_id, _ids, outcome = _start(services, _mission([{"title": "A"}, {"title": "B"}]))
    executor.coordinator.after_commit(outcome)
    assert _queue_length(services) == 2
    services.redis.flushdb()
    later = utcnow() + timedelta(seconds=services.settings.requeue_seconds + 1)
    assert tick(executor.coordinator, executor.coordinator.sender, services.settings, later).resent == 2
    assert _queue_length(services) == 2


def test_an_attempt_whose_worker_stopped_heart_beating_is_run_again(
    services: Services, executor: Executor, db: psycopg.Connection
) -> None:
    run_id, ids, _ = _start(services, _mission([{"title": "A"}]))
    with services.transaction() as conn:
        conn.execute(
            "UPDATE attempts SET status = 'running', heartbeat_at = now() - interval '1 hour' WHERE run_id = %s",
            (run_id,),
        )
        coordinator.step(conn, run_id, TaskClaimed(ids["A"], 1, "dead-worker"), utcnow())
    report = tick(executor.coordinator, executor.coordinator.sender, services.settings, utcnow())
    assert report.lost == 1
    rows = db.execute("SELECT attempt, status FROM attempts WHERE run_id = %s ORDER BY attempt", (run_id,)).fetchall()
    assert [(r["attempt"], r["status"]) for r in rows] == [(1, "lost"), (2, "queued")]
    assert executor.run_attempt(run_id, ids["A"], 2) == "finished"
    assert db.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()["status"] == "completed"


def test_a_retry_backoff_timer_fires_from_the_tick(
    services: Services, executor: Executor, db: psycopg.Connection
) -> None:
    doc = _mission(
        [{"title": "A", "maxRetries": 1, "retryPolicy": {"backoff": 30}}],
        [{"fail": "first try fails"}, {"output": "ok"}],
    )
    run_id, ids, _ = _start(services, doc)
    assert executor.run_attempt(run_id, ids["A"], 1) == "failed"
    timer = db.execute("SELECT kind, key, due_at FROM timers WHERE run_id = %s", (run_id,)).fetchone()
    assert (timer["kind"], timer["key"]) == ("retry", f"{ids['A']}:2")
    assert tick(executor.coordinator, executor.coordinator.sender, services.settings, utcnow()).timers == 0
    report = tick(
        executor.coordinator, executor.coordinator.sender, services.settings, timer["due_at"] + timedelta(seconds=1)
    )
    assert report.timers == 1
    assert executor.run_attempt(run_id, ids["A"], 2) == "finished"
    assert db.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()["status"] == "completed"


def test_an_attempt_is_created_with_its_prompt_holding_its_dependencys_output(
    services: Services, executor: Executor, db: psycopg.Connection
) -> None:
    run_id, ids, _ = _start(
        services, _mission([{"title": "A"}, {"title": "B", "dependsOn": ["A"]}], [{"output": "the output of A"}])
    )
    first = db.execute(
        "SELECT status, prompt FROM attempts WHERE run_id = %s AND task_id = %s", (run_id, ids["A"])
    ).fetchone()
    assert first["status"] == "queued" and "# Your task: A" in first["prompt"]
    assert executor.run_attempt(run_id, ids["A"], 1) == "finished"
    queued = db.execute(
        "SELECT status, prompt FROM attempts WHERE run_id = %s AND task_id = %s", (run_id, ids["B"])
    ).fetchone()
    assert queued["status"] == "queued"  # not claimed yet, and its prompt is already there
    assert "# Output of 'A'\nthe output of A" in queued["prompt"]
    assert executor.run_attempt(run_id, ids["B"], 1) == "finished"
    after = db.execute("SELECT prompt FROM attempts WHERE run_id = %s AND task_id = %s", (run_id, ids["B"])).fetchone()
    assert after["prompt"] == queued["prompt"]  # the claim did not rebuild it


def test_an_attempt_queued_without_a_prompt_gets_it_when_claimed(
    services: Services, executor: Executor, db: psycopg.Connection
) -> None:
    run_id, ids, _ = _start(services, _mission([{"title": "A"}], [{"output": "x"}]))
    db.execute("UPDATE attempts SET prompt = NULL WHERE run_id = %s", (run_id,))  # as an older version queued it
    assert executor.run_attempt(run_id, ids["A"], 1) == "finished"
    row = db.execute("SELECT prompt FROM attempts WHERE run_id = %s", (run_id,)).fetchone()
    assert row["prompt"].startswith("# Your task: A")


def test_a_step_whose_guard_matches_nothing_changes_nothing(services: Services, db: psycopg.Connection) -> None:
    from orchestrator.engine import WorkerLost
    from workers.store import attempts

    run_id, ids, _ = _start(services, _mission([{"title": "A"}]))
    with services.transaction() as conn:
        assert attempts.claim(conn, run_id, ids["A"], 1, "w", utcnow()) is not None
    before = db.execute(
        "SELECT version, (SELECT count(*) FROM events WHERE run_id = %s) AS events FROM runs WHERE id = %s",
        (run_id, run_id),
    ).fetchone()
    claimed = ((TaskClaimed(ids["A"], 1, "w"), utcnow()),)
    with services.transaction() as conn:
        missed = coordinator.step(
            conn,
            run_id,
            WorkerLost(ids["A"], 1),
            utcnow(),
            guard=attempts.mark_lost(run_id, ids["A"], 2, now=utcnow()),
            before=claimed,
        )
    assert missed is not None and missed.guard is None and missed.ignored
    after = db.execute(
        "SELECT version, (SELECT count(*) FROM events WHERE run_id = %s) AS events FROM runs WHERE id = %s",
        (run_id, run_id),
    ).fetchone()
    assert after == before
    with services.transaction() as conn:
        hit = coordinator.step(
            conn,
            run_id,
            WorkerLost(ids["A"], 1),
            utcnow(),
            guard=attempts.mark_lost(run_id, ids["A"], 1, now=utcnow()),
            before=claimed,
        )
    assert hit is not None and hit.guard is not None and not hit.ignored
    row = db.execute("SELECT version FROM runs WHERE id = %s", (run_id,)).fetchone()
    assert row["version"] == before["version"] + 1
