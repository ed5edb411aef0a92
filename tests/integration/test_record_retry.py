"""A finished result survives a database blip: when recording it fails transiently the executor
tries again (with a backoff, heart-beating the attempt meanwhile) instead of dropping it, so the
agent is not run (and paid for) a second time after the reaper took the attempt for lost."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from config import Settings
from orchestrator.engine import AssessmentScored, Event, TaskFinished
from tests.support import shell
from workers.coordination import advance as coordinator
from workers.coordination.tick import reap_lost_workers
from workers.execution import executor as executor_module
from workers.execution.executor import Executor
from workers.store import missions
from workers.store.db import is_transient
from workers.support.clock import utcnow
from workers.wiring import Services

LIMITS = missions.Limits()


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    # A worker is lost after 1 s without a heartbeat; attempts beat every 0.2 s.
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        data_dir=tmp_path / "data",
        worker_lost_seconds=1.0,
        heartbeat_seconds=0.2,
    )


@pytest.fixture
def executor(services: Services) -> Executor:
    return shell.executor(services, "test-worker")


@pytest.fixture
def agent_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The task ids the agent ran for (every runtime the executor picks is counted)."""
    calls: list[str] = []
    shell.note_agent_runs(monkeypatch, lambda call: calls.append(call.task_id))
    return calls


def _start(services: Services, tasks: list[dict[str, Any]]) -> tuple[str, dict[str, str]]:
    return shell.start_run(services, tasks)


def _fail_steps_of(monkeypatch: pytest.MonkeyPatch, kind: type[Event], failing: threading.Event | int) -> list[str]:
    """Both write paths of ``advance`` raise ``psycopg.OperationalError`` for events of ``kind``:
    while ``failing`` is set, or for its first ``failing`` tries. Returns one entry per failed try."""
    failed: list[str] = []
    paths = {name: getattr(coordinator, name) for name in ("step", "step_if_current")}

    def failing_now() -> bool:
        if isinstance(failing, threading.Event):
            return failing.is_set()
        return len(failed) < failing

    def patched(name: str) -> Any:
        def path(conn: Any, run_id: str, event: Event, *args: Any, **kwargs: Any) -> Any:
            if isinstance(event, kind) and failing_now():
                failed.append(name)
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            return paths[name](conn, run_id, event, *args, **kwargs)

        return path

    for name in paths:
        monkeypatch.setattr(coordinator, name, patched(name))
    return failed


def _attempts(db: psycopg.Connection, run_id: str) -> list[tuple[int, str, str | None]]:
    rows = db.execute("SELECT attempt, status, output FROM attempts WHERE run_id = %s ORDER BY attempt", (run_id,))
    return [(r["attempt"], r["status"], r["output"]) for r in rows]


def _event_types(db: psycopg.Connection, run_id: str) -> list[str]:
    return [r["type"] for r in db.execute("SELECT type FROM events WHERE run_id = %s ORDER BY id", (run_id,))]


def test_the_predicate_tells_a_database_blip_from_an_error_about_the_statement() -> None:
    from psycopg_pool import PoolClosed, PoolTimeout

    assert is_transient(psycopg.OperationalError("the connection is closed"))
    assert is_transient(psycopg.errors.AdminShutdown())  # pg_terminate_backend, a restart
    assert is_transient(psycopg.errors.DeadlockDetected())
    assert is_transient(PoolTimeout("couldn't get a connection after 30.00 sec"))
    assert not is_transient(PoolClosed("the pool is closed"))
    assert not is_transient(psycopg.errors.ProgramLimitExceeded())
    assert not is_transient(psycopg.errors.UniqueViolation())
    assert not is_transient(ValueError("not a database error"))


def test_a_result_whose_record_fails_twice_is_recorded_and_the_agent_ran_once(
    services: Services,
    executor: Executor,
    db: psycopg.Connection,
    agent_runs: list[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    run_id, ids = _start(services, [{"title": "A"}])
    failed = _fail_steps_of(monkeypatch, TaskFinished, 2)

    with caplog.at_level(logging.WARNING, logger="workers.execution.executor"):
        assert executor.run_attempt(run_id, ids["A"], 1) == "finished"

    assert len(failed) == 2
    assert sum("trying again" in r.getMessage() for r in caplog.records) == 2
    assert agent_runs == [ids["A"]]
    assert _attempts(db, run_id) == [(1, "completed", "the result")]
    assert db.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()["status"] == "completed"
    assert _event_types(db, run_id).count("task:status") >= 2  # queued, running, completed: recorded once


def test_a_record_retried_longer_than_the_worker_lost_window_keeps_the_attempt_alive(
    services: Services,
    executor: Executor,
    db: psycopg.Connection,
    agent_runs: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(executor_module, "RETRY_WINDOWS", 10)  # tries for 10 s, failing for 2.5
    run_id, ids = _start(services, [{"title": "A"}])
    failing = threading.Event()
    failing.set()
    failed = _fail_steps_of(monkeypatch, TaskFinished, failing)
    results: list[str] = []
    worker = threading.Thread(target=lambda: results.append(executor.run_attempt(run_id, ids["A"], 1)))
    worker.start()
    try:
        time.sleep(2.5)  # the record keeps failing for 2.5 worker-lost windows
        assert failed, "the record was not even tried"
        heartbeat = db.execute("SELECT status, now() - heartbeat_at AS age FROM attempts WHERE run_id = %s", (run_id,))
        row = heartbeat.fetchone()
        assert row["status"] == "running" and row["age"].total_seconds() < 1.0  # heart-beaten meanwhile
        # The reaper runs meanwhile and finds nothing lost.
        assert reap_lost_workers(shell.coordinator(services), services.settings, utcnow()) == 0
    finally:
        failing.clear()
        worker.join(30)
    assert results == ["finished"]
    assert len(failed) >= 3
    assert agent_runs == [ids["A"]]
    assert _attempts(db, run_id) == [(1, "completed", "the result")]
    assert "task:lost" not in _event_types(db, run_id)
    statuses = [
        r["data"].get("status")
        for r in db.execute("SELECT data FROM events WHERE run_id = %s AND type = 'task:status'", (run_id,))
    ]
    assert "lost" not in statuses and statuses[-1] == "completed"


def test_a_result_is_recorded_after_postgres_drops_the_workers_connections(
    services: Services,
    executor: Executor,
    db: psycopg.Connection,
    agent_runs: list[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    run_id, ids = _start(services, [{"title": "A"}])
    original = executor_module.runtime_for

    def terminating(model: str, providers: Any) -> Any:
        runtime = original(model, providers)

        class Terminating:
            batch_output = False

            def run(self, call: Any, cancel: threading.Event, emit: Any) -> Any:
                result = runtime.run(call, cancel, emit)
                # As if Postgres restarted while the agent ran: every pooled connection of the worker
                # (this test's database only; not the test's own connection) is gone.
                ended = db.execute(
                    "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchone()
                assert ended["n"] >= 1
                return result

        return Terminating()

    monkeypatch.setattr(executor_module, "runtime_for", terminating)
    with caplog.at_level(logging.WARNING, logger="workers.execution.executor"):
        assert executor.run_attempt(run_id, ids["A"], 1) == "finished"
    assert any("trying again" in r.getMessage() for r in caplog.records)
    assert _attempts(db, run_id) == [(1, "completed", "the result")]
    assert db.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()["status"] == "completed"


def test_an_error_that_is_not_transient_is_not_tried_again(
    services: Services, executor: Executor, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, ids = _start(services, [{"title": "A"}])
    tries: list[int] = []

    def broken(*args: Any, **kwargs: Any) -> Any:
        tries.append(1)
        raise psycopg.errors.ProgramLimitExceeded("index row size exceeds the maximum")

    monkeypatch.setattr(coordinator, "step_if_current", broken)
    monkeypatch.setattr(coordinator, "step", broken)
    started = time.monotonic()
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):
        executor.run_attempt(run_id, ids["A"], 1)
    assert len(tries) == 1 and time.monotonic() - started < 1.0
    assert _attempts(db, run_id)[0][1] == "running"  # left to the reaper, as before


def test_a_verdict_whose_record_fails_transiently_is_recorded(
    services: Services,
    executor: Executor,
    db: psycopg.Connection,
    agent_runs: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id, ids = _start(services, [{"title": "A", "expectations": [{"type": "contains", "value": "result"}]}])
    failed = _fail_steps_of(monkeypatch, AssessmentScored, 2)

    assert executor.run_attempt(run_id, ids["A"], 1) == "finished"  # assessed inline, after the record

    assert len(failed) == 2
    assert agent_runs == [ids["A"]]
    row = db.execute("SELECT status, score FROM attempts WHERE run_id = %s", (run_id,)).fetchone()
    assert row["status"] == "completed" and row["score"] is not None
    assert db.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()["status"] == "completed"


def test_a_record_that_keeps_failing_gives_up_after_its_window(
    services: Services, executor: Executor, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor_module, "RETRY_WINDOWS", 0.8)  # 0.8 s (worker-lost window: 1 s)
    run_id, ids = _start(services, [{"title": "A"}])
    failed = _fail_steps_of(monkeypatch, TaskFinished, 1000)
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        executor.run_attempt(run_id, ids["A"], 1)
    assert 0.7 < time.monotonic() - started < 2.0
    assert len(failed) == 4  # tries at 0, 0.2, 0.6 and the end of the window (0.8)
    assert _attempts(db, run_id)[0][1] == "running"  # left to the reaper, as when a worker dies
