"""The run store writes only what a step changed and its cache never serves a stale state."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from orchestrator.engine import TaskAdded, TaskClaimed, TaskFinished
from orchestrator.spec import TaskSpec
from tests.support import shell
from workers.coordination import advance as coordinator
from workers.coordination import runs
from workers.store import missions
from workers.store import run_state as run_store
from workers.store.projects import ensure_project
from workers.support.clock import utcnow
from workers.wiring import Services

LIMITS = missions.Limits()


def _fan_out(services: Services, width: int) -> tuple[str, dict[str, str]]:
    tasks: list[dict[str, Any]] = [{"title": "root", "description": "d", "assignTo": "a"}]
    tasks += [{"title": f"leaf {i}", "description": "d", "assignTo": "a", "dependsOn": ["root"]} for i in range(width)]
    doc = {
        "name": "fan",
        "tasks": tasks,
        "team": {"name": "t", "volatile": True, "agents": [{"name": "a", "model": "scripted/x"}]},
    }
    with services.transaction() as conn:
        project = ensure_project(conn, "p")
        mission = missions.create_mission(conn, project, doc, LIMITS)
        run_id, outcome, *_ = runs.execute(shell.uow(conn), project, mission.id, LIMITS, utcnow())
    run_store.remember(run_id, outcome.stored)
    return run_id, {t.title: t.id for t in mission.tasks}


def _fresh(services: Services, run_id: str) -> run_store.Stored:
    run_store.CACHE.forget(run_id)
    with services.transaction() as conn:
        stored = run_store.load(conn, run_id, lock=False)
    assert stored is not None
    return stored


def _step(services: Services, run_id: str, event: Any, *, remember: bool = True) -> coordinator.AfterCommit:
    with services.transaction() as conn:
        outcome = coordinator.step(conn, run_id, event, utcnow())
    assert outcome is not None
    if remember:
        run_store.remember(run_id, outcome.stored)
    return outcome


def test_a_step_writes_only_the_task_rows_it_changed(services: Services, db: psycopg.Connection) -> None:
    run_id, ids = _fan_out(services, 200)
    outcome = _step(services, run_id, TaskClaimed(ids["root"], 1, "w"))
    rows = db.execute(
        "SELECT task_id FROM run_tasks WHERE run_id = %s AND version = %s", (run_id, outcome.stored.version)
    ).fetchall()
    assert [r["task_id"] for r in rows] == [ids["root"]]
    assert db.execute("SELECT count(*) AS n FROM run_tasks WHERE run_id = %s", (run_id,)).fetchone()["n"] == 201
    state_doc = db.execute("SELECT state FROM runs WHERE id = %s", (run_id,)).fetchone()["state"]
    assert "tasks" not in state_doc and "spec" not in state_doc


def test_the_cached_state_is_reused_when_nothing_else_moved_the_run(services: Services) -> None:
    run_id, ids = _fan_out(services, 5)
    outcome = _step(services, run_id, TaskClaimed(ids["root"], 1, "w"))
    with services.transaction() as conn:
        stored = run_store.load(conn, run_id)
    assert stored is not None and stored.state is outcome.stored.state


def test_a_state_written_by_another_thread_is_reused_as_soon_as_its_commit_is_visible(services: Services) -> None:
    run_id, ids = _fan_out(services, 5)
    # The writer has committed but not yet reached its after-commit step.
    outcome = _step(services, run_id, TaskClaimed(ids["root"], 1, "w"), remember=False)
    with services.transaction() as conn:
        stored = run_store.load(conn, run_id)
    assert stored is not None and stored.state is outcome.stored.state and stored.confirmed


def test_changes_made_by_another_process_are_read_incrementally_and_match_a_full_read(services: Services) -> None:
    run_id, ids = _fan_out(services, 20)
    _step(services, run_id, TaskClaimed(ids["root"], 1, "w"))
    # Another process finishes the root: this process's cache does not hear of it.
    _step(services, run_id, TaskFinished(ids["root"], 1, "out"), remember=False)
    with services.transaction() as conn:
        incremental = run_store.load(conn, run_id)
    assert incremental is not None
    assert incremental == _fresh(services, run_id)
    assert str(incremental.state.tasks[ids["leaf 3"]].status) == "queued"


def test_a_rolled_back_step_never_reaches_the_cache(services: Services) -> None:
    run_id, ids = _fan_out(services, 3)
    before = _step(services, run_id, TaskClaimed(ids["root"], 1, "w")).stored
    with pytest.raises(RuntimeError), services.transaction() as conn:
        outcome = coordinator.step(conn, run_id, TaskFinished(ids["root"], 1, "out"), utcnow())
        assert outcome is not None and outcome.stored.version == before.version + 1
        raise RuntimeError("crash before commit")
    with services.transaction() as conn:
        after = run_store.load(conn, run_id)
    # The rolled-back write was cached (unconfirmed) but its token never reached the row.
    assert after is not None and after.version == before.version
    assert str(after.state.tasks[ids["root"]].status) == "running"
    assert after == _fresh(services, run_id)


def test_a_task_added_while_running_is_seen_by_every_process(services: Services) -> None:
    run_id, ids = _fan_out(services, 2)
    _step(services, run_id, TaskClaimed(ids["root"], 1, "w"))
    extra = TaskSpec(title="late", description="d", assign_to="a", id="task_late", depends_on=("root",))
    _step(services, run_id, TaskAdded(extra), remember=False)
    with services.transaction() as conn:
        seen = run_store.load(conn, run_id)
    assert seen is not None and "task_late" in seen.state.tasks
    assert seen.spec_version == 1 and seen == _fresh(services, run_id)


def test_a_run_new_to_the_process_is_read_in_one_round_trip(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, ids = _fan_out(services, 4)
    outcome = _step(services, run_id, TaskClaimed(ids["root"], 1, "w"))
    run_store.CACHE.forget(run_id)
    statements: list[str] = []
    with services.transaction() as conn:
        execute = conn.execute
        monkeypatch.setattr(
            conn, "execute", lambda query, *args, **kw: statements.append(query) or execute(query, *args, **kw)
        )
        read = run_store.load(conn, run_id, lock=False)
    assert len(statements) == 1
    assert read is not None and read.version == outcome.stored.version and read.state == outcome.stored.state
