"""A unit of work sends what a change of a run asks for only once that change has committed, and
never what was rolled back; the caller does not choose the write path."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from orchestrator.engine import AbortRequested, TaskClaimed, TaskOutputProduced
from workers.coordination import runs
from workers.coordination.advance import Coordinator
from workers.coordination.outcome import AfterCommit, Inline
from workers.store import missions, run_state
from workers.store.projects import ensure_project
from workers.support.clock import utcnow
from workers.support.errors import Conflict
from workers.wiring import Services

LIMITS = missions.Limits()
DOCUMENT: dict[str, Any] = {
    "name": "m",
    "tasks": [{"title": "A", "description": "d", "assignTo": "a"}, {"title": "B", "description": "d", "assignTo": "a"}],
    "team": {"name": "t", "volatile": True, "agents": [{"name": "a", "model": "scripted/x"}]},
}


class Recorder:
    """A sender that keeps what it was handed, and whether the run's row was committed by then."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.sent: list[tuple[AfterCommit, bool]] = []

    def send(self, outcome: AfterCommit, inline: Inline | None = None) -> None:
        with psycopg.connect(self.database_url) as conn:  # another session: sees committed rows only
            row = conn.execute("SELECT version FROM runs WHERE id = %s", (outcome.run_id,)).fetchone()
        stored = outcome.stored
        self.sent.append((outcome, row is not None and stored is not None and row[0] == stored.version))


class Boom(Exception):
    pass


@pytest.fixture
def recorder(database_url: str) -> Recorder:
    return Recorder(database_url)


@pytest.fixture
def coordinator(services: Services, recorder: Recorder) -> Coordinator:
    return Coordinator(services.db, recorder)


def _execute(coordinator: Coordinator) -> tuple[str, dict[str, str], str]:
    with coordinator.transaction() as uow:
        project = ensure_project(uow.conn, "p")
        mission = missions.create_mission(uow.conn, project, dict(DOCUMENT), LIMITS)
        run_id, *_ = runs.execute(uow, project, mission.id, LIMITS, utcnow())
    return run_id, {t.title: t.id for t in mission.tasks}, mission.id


def test_a_transaction_sends_its_run_start_after_the_commit(coordinator: Coordinator, recorder: Recorder) -> None:
    run_id, ids, _ = _execute(coordinator)
    [(outcome, committed)] = recorder.sent
    assert committed and outcome.run_id == run_id
    assert sorted(s.task_id for s in outcome.start) == sorted(ids.values())


def test_a_transaction_that_raises_sends_nothing_and_writes_nothing(
    coordinator: Coordinator, recorder: Recorder, db: psycopg.Connection
) -> None:
    run_id, _, mission_id = _execute(coordinator)
    recorder.sent.clear()
    with pytest.raises(Boom), coordinator.transaction() as uow:
        runs.abort(uow, _project(db, mission_id), mission_id, utcnow())
        raise Boom
    assert recorder.sent == []
    assert db.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()["status"] == "active"


def test_a_savepoint_that_raises_drops_its_sends_but_not_the_others(
    coordinator: Coordinator, recorder: Recorder, db: psycopg.Connection
) -> None:
    run_id, ids, mission_id = _execute(coordinator)
    recorder.sent.clear()
    with coordinator.transaction() as uow:
        with pytest.raises(Boom), uow.savepoint():
            runs.abort(uow, _project(db, mission_id), mission_id, utcnow())
            raise Boom
        uow.advance(run_id, TaskClaimed(ids["A"], 1, "w"), utcnow())
    [(outcome, committed)] = recorder.sent
    assert committed and not outcome.cancel  # the abort was rolled back with its savepoint
    assert db.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()["status"] == "active"


def test_steps_send_what_committed_even_when_the_block_then_raises(
    coordinator: Coordinator, recorder: Recorder
) -> None:
    run_id, ids, _ = _execute(coordinator)
    recorder.sent.clear()
    with pytest.raises(Boom), coordinator.steps() as uow:
        uow.advance(run_id, TaskClaimed(ids["A"], 1, "w"), utcnow())
        raise Boom
    [(outcome, committed)] = recorder.sent
    assert committed and outcome.last_event_id is not None


def test_advance_takes_the_one_statement_path_when_this_process_holds_the_run(
    coordinator: Coordinator, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, ids, _ = _execute(coordinator)
    locking: list[str] = []
    original = run_state.load
    monkeypatch.setattr(run_state, "load", lambda *a, **k: locking.append("lock") or original(*a, **k))
    coordinator.advance(run_id, TaskClaimed(ids["A"], 1, "w"), utcnow())
    coordinator.advance(run_id, TaskOutputProduced(ids["A"], 1, "x"), utcnow())
    assert locking == [] and all(committed for _, committed in recorder.sent)
    run_state.CACHE.forget(run_id)  # a process that does not hold the run takes the lock
    coordinator.advance(run_id, TaskOutputProduced(ids["A"], 1, "y"), utcnow())
    assert locking == ["lock"]


def test_an_abort_asks_to_cancel_the_running_attempt_only_after_its_commit(
    coordinator: Coordinator, recorder: Recorder, db: psycopg.Connection
) -> None:
    run_id, ids, mission_id = _execute(coordinator)
    coordinator.advance(run_id, TaskClaimed(ids["A"], 1, "w"), utcnow())
    recorder.sent.clear()
    with coordinator.transaction() as uow:
        runs.abort(uow, _project(db, mission_id), mission_id, utcnow())
        assert recorder.sent == []  # not before the commit
    [(outcome, committed)] = recorder.sent
    assert committed and {c.task_id for c in outcome.cancel} >= {ids["A"]}


def test_a_run_begins_only_inside_a_transaction(coordinator: Coordinator) -> None:
    run_id, _, _ = _execute(coordinator)
    state = run_state.CACHE.get(run_id)
    assert state is not None
    with pytest.raises(RuntimeError, match="inside a transaction"), coordinator.steps() as uow:
        uow.begin_run("run_other", 2, state.state.spec, state.state.mission_id, utcnow())


def _project(db: psycopg.Connection, mission_id: str) -> str:
    return str(db.execute("SELECT project_id FROM missions WHERE id = %s", (mission_id,)).fetchone()["project_id"])


def test_an_abort_ignored_by_the_run_is_a_conflict_and_sends_nothing(
    coordinator: Coordinator, recorder: Recorder, db: psycopg.Connection
) -> None:
    run_id, _, mission_id = _execute(coordinator)
    with coordinator.transaction() as uow:
        runs.abort(uow, _project(db, mission_id), mission_id, utcnow())
    recorder.sent.clear()
    with pytest.raises(Conflict), coordinator.transaction() as uow:
        uow.advance(run_id, AbortRequested(), utcnow())  # a finished run ignores it
        runs.abort(uow, _project(db, mission_id), mission_id, utcnow())
    assert recorder.sent == []
