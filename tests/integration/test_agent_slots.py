"""A reusable agent's ``maxConcurrency`` holds across every run of its project: slots leased in
Postgres (``agent_slots``), granted first come first served when a step frees one, never leaked by
a lost worker, and never paid for by a mission without shared limits."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest

from tests.support import shell
from workers.coordination import runs
from workers.coordination.tick import tick
from workers.execution.executor import Executor
from workers.messaging.dispatch import TASK_QUEUE
from workers.store import missions
from workers.store.projects import ensure_project
from workers.support.clock import utcnow
from workers.wiring import Services

LIMITS = missions.Limits()
SHARED = {"name": "shared", "model": "scripted/x", "maxConcurrency": 1, "script": [{"output": "ok"}]}


def owner(*titles: str) -> dict[str, Any]:
    """A mission whose non-volatile team keeps the agent ``shared`` in the project."""
    return {
        "name": "owner",
        "tasks": [{"title": t, "description": "d", "assignTo": "shared"} for t in titles],
        "team": {"name": "crew", "volatile": False, "agents": [SHARED]},
    }


def borrower(name: str, *titles: str) -> dict[str, Any]:
    """A mission with no team of its own: it uses the project's agent ``shared`` by name."""
    return {"name": name, "tasks": [{"title": t, "description": "d", "assignTo": "shared"} for t in titles]}


def start(services: Services, document: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """Create and execute a mission, then send what its start asks for (as the API does)."""
    with services.transaction() as conn:
        project = ensure_project(conn, "p")
        mission = missions.create_mission(conn, project, document, LIMITS)
        run_id, outcome, *_ = runs.execute(shell.uow(conn), project, mission.id, LIMITS, utcnow())
    shell.coordinator(services).after_commit(outcome)
    return run_id, {t.title: t.id for t in mission.tasks}


def slots_of(db: psycopg.Connection) -> list[tuple[str, str, int, bool]]:
    rows = db.execute(
        "SELECT run_id, task_id, attempt, granted_at IS NOT NULL AS granted FROM agent_slots ORDER BY requested_at"
    ).fetchall()
    return [(r["run_id"], r["task_id"], r["attempt"], r["granted"]) for r in rows]


def queued_messages(services: Services) -> list[str]:
    return [m.decode() if isinstance(m, bytes) else m for m in services.redis.lrange(TASK_QUEUE, 0, -1)]


def sent(services: Services, run_id: str, task_id: str) -> bool:
    return any(run_id in m and task_id in m for m in queued_messages(services))


@pytest.fixture
def executor(services: Services) -> Executor:
    services.redis.delete(TASK_QUEUE)
    return shell.executor(services, "test-worker")


def test_two_missions_sharing_an_agent_take_turns_first_come_first_served(
    services: Services, executor: Executor, db: psycopg.Connection
) -> None:
    run_a, a = start(services, owner("A1", "A2"))
    run_b, b = start(services, borrower("b", "B1"))
    # A1 holds the one slot; A2 waits inside its run (the run's own limit), B1 in the project.
    assert slots_of(db) == [(run_a, a["A1"], 1, True), (run_b, b["B1"], 1, False)]
    assert sent(services, run_a, a["A1"]) and not sent(services, run_b, b["B1"])
    task = db.execute(
        "SELECT state->>'status' AS status FROM run_tasks WHERE run_id = %s AND task_id = %s", (run_b, b["B1"])
    ).fetchone()
    assert task["status"] == "queued"  # visibly waiting

    assert executor.run_attempt(run_a, a["A1"], 1) == "finished"
    # A1's end freed the slot: B1 asked first, so B1 gets it; A2 (started by that same step) waits.
    assert slots_of(db) == [(run_b, b["B1"], 1, True), (run_a, a["A2"], 1, False)]
    assert sent(services, run_b, b["B1"]) and not sent(services, run_a, a["A2"])

    assert executor.run_attempt(run_b, b["B1"], 1) == "finished"
    assert slots_of(db) == [(run_a, a["A2"], 1, True)]
    assert executor.run_attempt(run_a, a["A2"], 1) == "finished"
    assert slots_of(db) == []
    statuses = db.execute("SELECT id, status FROM runs ORDER BY created_at").fetchall()
    assert [r["status"] for r in statuses] == ["completed", "completed"]


def test_a_waiting_attempt_is_not_re_sent_as_lost_and_the_tick_grants_a_slot_a_crash_left_free(
    services: Services, executor: Executor, db: psycopg.Connection
) -> None:
    run_a, a = start(services, owner("A1"))
    run_b, b = start(services, borrower("b", "B1"))
    services.redis.delete(TASK_QUEUE)
    later = utcnow() + timedelta(hours=1)
    report = tick(shell.quiet_coordinator(services), shell.dispatcher(services), services.settings, later)
    assert report.resent == 1 and report.granted == 0  # A1's lost message; B1 waits, it is not lost
    assert not sent(services, run_b, b["B1"])
    # A1 ends in a step whose after-commit grant never ran (the process died in between).
    claimed = db.execute(
        "UPDATE attempts SET status = 'completed' WHERE run_id = %s AND task_id = %s RETURNING 1", (run_a, a["A1"])
    ).fetchone()
    assert claimed is not None
    report = tick(shell.quiet_coordinator(services), shell.dispatcher(services), services.settings, later)
    assert report.granted == 1 and sent(services, run_b, b["B1"])
    assert slots_of(db) == [(run_b, b["B1"], 1, True)]


def test_a_lost_worker_does_not_leak_its_slot(services: Services, executor: Executor, db: psycopg.Connection) -> None:
    run_a, a = start(services, owner("A1"))
    run_b, b = start(services, borrower("b", "B1"))
    # A worker claims A1 and dies: its heartbeat stops, so its lease runs out.
    stale = utcnow() - timedelta(hours=1)
    db.execute(
        "UPDATE attempts SET status = 'running', worker = 'gone', claimed_at = %s, heartbeat_at = %s"
        " WHERE run_id = %s AND task_id = %s",
        (stale, stale, run_a, a["A1"]),
    )
    report = tick(shell.coordinator(services), shell.dispatcher(services), services.settings, utcnow())
    assert report.lost == 1
    # The lost attempt's slot went to B1 (waiting first); A1's re-run waits for it.
    assert slots_of(db) == [(run_b, b["B1"], 1, True), (run_a, a["A1"], 2, False)]
    assert executor.run_attempt(run_b, b["B1"], 1) == "finished"
    assert slots_of(db) == [(run_a, a["A1"], 2, True)]


def test_a_volatile_agent_keeps_its_limit_inside_its_run_and_takes_no_slot(
    services: Services, db: psycopg.Connection
) -> None:
    doc = owner("A1", "A2")
    doc["team"]["volatile"] = True
    start(services, doc)
    start(services, {**doc, "name": "other"})
    assert slots_of(db) == []
    queued = db.execute("SELECT count(*) AS n FROM attempts WHERE status = 'queued'").fetchone()
    assert queued["n"] == 2  # one per run: each run holds its own limit of 1


def test_a_slot_granted_to_another_run_is_sent_in_that_runs_trace(
    services: Services, executor: Executor, db: psycopg.Connection
) -> None:
    from tests.support.spans import hex_ids, in_memory_traces
    from workers.support import tracing

    with in_memory_traces() as exporter:
        with tracing.span("POST /v1/missions/{a}/execute"):
            run_a, a = start(services, owner("A1"))
        with tracing.span("POST /v1/missions/{b}/execute") as request_b:
            run_b, b = start(services, borrower("b", "B1"))
        exporter.clear()
        with tracing.span("run/missions.run_task") as worker_a:  # A1's message, run by a worker
            assert executor.run_attempt(run_a, a["A1"], 1) == "finished"  # frees the slot: B1 gets it
        spans = exporter.get_finished_spans()

    assert sent(services, run_b, b["B1"])
    [grant] = [s for s in spans if s.name == "missions.slot_grant"]
    assert grant.attributes["missions.run_id"] == run_b
    assert hex_ids(grant.context)[0] == hex_ids(request_b.get_span_context())[0]  # B's trace, not A's
    assert hex_ids(worker_a.get_span_context())[0] != hex_ids(grant.context)[0]
    stored = db.execute("SELECT traceparent FROM runs WHERE id = %s", (run_b,)).fetchone()["traceparent"]
    assert stored.split("-")[1] == hex_ids(grant.context)[0]
