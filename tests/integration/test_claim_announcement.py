"""The claim of an attempt commits alone and reaches the run (``TaskClaimed``: "running") with the
attempt's first step: its first output, its result, or, for a slow agent, the heartbeat watcher
after ``ANNOUNCE_AFTER``. These tests pin what a client and the reaper observe."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import psycopg

from tests.integration.test_coordination import _mission, _start
from tests.support import shell
from workers.coordination.tick import reap_lost_workers
from workers.execution import executor as execution
from workers.execution.executor import Executor
from workers.support.clock import utcnow
from workers.wiring import Services


def _executor(services: Services) -> Executor:
    return shell.executor(services, "test-worker")


def _task_events(db: psycopg.Connection, run_id: str, task_id: str) -> list[tuple[int, str]]:
    rows = db.execute("SELECT id, type, data FROM events WHERE run_id = %s ORDER BY id", (run_id,)).fetchall()
    return [(r["id"], r["data"].get("status") or r["type"]) for r in rows if r["data"].get("taskId") == task_id]


def _run_version(db: psycopg.Connection, run_id: str) -> int:
    return int(db.execute("SELECT version FROM runs WHERE id = %s", (run_id,)).fetchone()["version"])


def test_a_quick_agent_is_announced_running_and_completed_in_one_step(
    services: Services, db: psycopg.Connection
) -> None:
    run_id, ids, _ = _start(services, _mission([{"title": "A"}, {"title": "B"}], [{"output": "x"}]))
    before = _run_version(db, run_id)
    assert _executor(services).run_attempt(run_id, ids["A"], 1) == "finished"
    assert [s for _, s in _task_events(db, run_id, ids["A"])] == ["queued", "running", "completed"]
    assert _run_version(db, run_id) == before + 1  # one write for claim and result
    state = db.execute("SELECT state FROM run_tasks WHERE run_id = %s AND task_id = %s", (run_id, ids["A"])).fetchone()[
        "state"
    ]
    attempt = db.execute(
        "SELECT claimed_at, finished_at FROM attempts WHERE run_id = %s AND task_id = %s", (run_id, ids["A"])
    ).fetchone()
    # the task's times are the claim's and the result's, not the step's
    assert state["startedAt"] == attempt["claimed_at"].isoformat().replace("+00:00", "Z")


def test_outputs_follow_the_running_status(services: Services, db: psycopg.Connection) -> None:
    run_id, ids, _ = _start(services, _mission([{"title": "A"}], [{"outputChunks": ["a", "b"]}]))
    assert _executor(services).run_attempt(run_id, ids["A"], 1) == "finished"
    assert [s for _, s in _task_events(db, run_id, ids["A"])] == [
        "queued",
        "running",
        "task:output",
        "task:output",
        "completed",
    ]


def test_a_slow_agent_is_shown_running_while_it_runs(services: Services, db: psycopg.Connection) -> None:
    run_id, ids, _ = _start(services, _mission([{"title": "A"}], [{"delay": 1.5, "output": "x"}]))
    executor = _executor(services)
    worker = threading.Thread(target=executor.run_attempt, args=(run_id, ids["A"], 1))
    started = time.monotonic()
    worker.start()
    seen: Any = None
    while time.monotonic() - started < 1.2:
        seen = db.execute(
            "SELECT state->>'status' AS status FROM run_tasks WHERE run_id = %s AND task_id = %s", (run_id, ids["A"])
        ).fetchone()["status"]
        if seen == "running":
            break
        time.sleep(0.02)
    shown_after = time.monotonic() - started
    assert seen == "running"
    assert execution.ANNOUNCE_AFTER <= shown_after < execution.ANNOUNCE_AFTER + 0.8
    worker.join(10)
    assert [s for _, s in _task_events(db, run_id, ids["A"])] == ["queued", "running", "completed"]


def test_a_claimed_side_effecting_attempt_lost_before_its_announcement_waits_for_approval(
    services: Services, db: psycopg.Connection
) -> None:
    run_id, _ids, _ = _start(services, _mission([{"title": "Deploy", "sideEffects": True}]))
    long_ago = utcnow() - timedelta(minutes=5)
    # What a worker that died right after its claim leaves: the row claimed, the run not told.
    db.execute(
        "UPDATE attempts SET status = 'running', worker = 'dead-worker', claimed_at = %s, heartbeat_at = %s"
        " WHERE run_id = %s",
        (long_ago, long_ago, run_id),
    )
    assert (
        db.execute("SELECT state->>'status' AS s FROM run_tasks WHERE run_id = %s", (run_id,)).fetchone()["s"]
        == "queued"
    )
    assert reap_lost_workers(shell.coordinator(services), services.settings, utcnow()) == 1
    row = db.execute("SELECT status, pause_reason FROM runs WHERE id = %s", (run_id,)).fetchone()
    assert (row["status"], row["pause_reason"]) == ("paused", "approval")
    task = db.execute("SELECT state->>'status' AS s FROM run_tasks WHERE run_id = %s", (run_id,)).fetchone()
    assert task["s"] == "awaiting_approval"
    assert db.execute("SELECT count(*) AS n FROM attempts WHERE run_id = %s", (run_id,)).fetchone()["n"] == 1
