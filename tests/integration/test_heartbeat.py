"""The process-wide heartbeat watcher against real Postgres and Redis."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from tests.support import shell
from workers.coordination import runs
from workers.execution.heartbeat import Heartbeats
from workers.messaging.dispatch import cancel_key
from workers.store import missions
from workers.store.projects import ensure_project
from workers.support.clock import utcnow
from workers.wiring import Services


def _queued_attempts(services: Services, titles: list[str]) -> tuple[str, list[str]]:
    """A run whose tasks (no dependencies) each have a queued attempt 1, marked running here."""
    document: dict[str, Any] = {
        "name": "m",
        "tasks": [{"title": t, "description": "d", "assignTo": "a"} for t in titles],
        "team": {"name": "t", "volatile": True, "agents": [{"name": "a", "role": "r", "model": "scripted/x"}]},
    }
    with services.transaction() as conn:
        project = ensure_project(conn, "p")
        mission = missions.create_mission(conn, project, document, missions.Limits())
        run_id, *_ = runs.execute(shell.uow(conn), project, mission.id, missions.Limits(), utcnow())
        conn.execute(
            "UPDATE attempts SET status = 'running', heartbeat_at = now() - interval '1 hour' WHERE run_id = %s",
            (run_id,),
        )
    return run_id, [t.id for t in mission.tasks]


def _beats(db: psycopg.Connection, run_id: str) -> dict[str, float]:
    rows = db.execute(
        "SELECT task_id, extract(epoch FROM now() - heartbeat_at) AS age FROM attempts WHERE run_id = %s", (run_id,)
    ).fetchall()
    return {r["task_id"]: float(r["age"]) for r in rows}


def _wait(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_one_round_beats_every_due_attempt_and_cancels_those_whose_row_moved_on(
    services: Services, db: psycopg.Connection
) -> None:
    run_id, (a, b, c) = _queued_attempts(services, ["A", "B", "C"])
    db.execute("UPDATE attempts SET status = 'cancelled' WHERE run_id = %s AND task_id = %s", (run_id, c))
    beats = Heartbeats(services.db, services.dispatcher.cancel_flags, interval=60)
    with (
        beats.watch(run_id, a, 1, "running") as wa,
        beats.watch(run_id, b, 1, "running") as wb,
        beats.watch(run_id, c, 1, "running") as wc,
    ):
        beats.check([wa, wb, wc], time.monotonic() + 61)
        ages = _beats(db, run_id)
        assert ages[a] < 60 and ages[b] < 60  # beaten now
        assert ages[c] > 3000  # its row is no longer running: not beaten...
        assert wc.cancelled.is_set()  # ...and its attempt must stop
        assert not wa.cancelled.is_set() and not wb.cancelled.is_set()


def test_an_attempt_not_yet_due_is_not_beaten(services: Services, db: psycopg.Connection) -> None:
    run_id, (a,) = _queued_attempts(services, ["A"])
    beats = Heartbeats(services.db, services.dispatcher.cancel_flags, interval=60)
    with beats.watch(run_id, a, 1, "running") as wa:
        beats.check([wa], time.monotonic())
    assert _beats(db, run_id)[a] > 3000
    assert not wa.cancelled.is_set()


def test_a_cancel_flag_stops_only_its_own_attempt_within_a_poll(services: Services) -> None:
    run_id, (a, b) = _queued_attempts(services, ["A", "B"])
    beats = Heartbeats(services.db, services.dispatcher.cancel_flags, interval=60, poll=0.05)
    with beats.watch(run_id, a, 1, "running") as wa, beats.watch(run_id, b, 1, "running") as wb:
        started = time.monotonic()
        services.redis.set(cancel_key(run_id, a, 1), "aborted")
        assert _wait(wa.cancelled.is_set)
        assert time.monotonic() - started < 1.0
        time.sleep(0.2)
        assert not wb.cancelled.is_set()


def test_the_watcher_thread_beats_on_its_own_and_forgets_attempts_that_ended(
    services: Services, db: psycopg.Connection
) -> None:
    run_id, (a, b) = _queued_attempts(services, ["A", "B"])
    beats = Heartbeats(services.db, services.dispatcher.cancel_flags, interval=0.1, poll=0.05)
    with beats.watch(run_id, a, 1, "running"):
        with beats.watch(run_id, b, 1, "running"):
            assert _wait(lambda: max(_beats(db, run_id).values()) < 60)
        db.execute("UPDATE attempts SET heartbeat_at = now() - interval '1 hour' WHERE run_id = %s", (run_id,))
        assert _wait(lambda: _beats(db, run_id)[a] < 60)
        time.sleep(0.3)
        assert _beats(db, run_id)[b] > 3000  # B's attempt ended: no longer beaten


def test_the_watcher_thread_idle_between_attempts_wakes_for_the_next_one(
    services: Services, db: psycopg.Connection
) -> None:
    run_id, (a, b) = _queued_attempts(services, ["A", "B"])
    beats = Heartbeats(services.db, services.dispatcher.cancel_flags, interval=0.1, poll=0.05)
    with beats.watch(run_id, a, 1, "running"):
        assert _wait(lambda: _beats(db, run_id)[a] < 60)
    time.sleep(0.2)  # nothing watched: the thread waits to be woken
    assert beats._thread is not None and beats._thread.is_alive()
    with beats.watch(run_id, b, 1, "running") as wb:
        assert _wait(lambda: _beats(db, run_id)[b] < 60)
        services.redis.set(cancel_key(run_id, b, 1), "aborted")
        assert _wait(wb.cancelled.is_set)


def test_a_redis_failure_does_not_stop_the_heartbeat(
    services: Services, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, (a,) = _queued_attempts(services, ["A"])

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("redis is down")

    monkeypatch.setattr(services.redis, "mget", broken)
    beats = Heartbeats(services.db, services.dispatcher.cancel_flags, interval=60)
    with beats.watch(run_id, a, 1, "running") as wa:
        beats.check([wa], time.monotonic() + 61)
    assert _beats(db, run_id)[a] < 60
    assert not wa.cancelled.is_set()
