"""The coordinator step in one statement (``coordinator.step_if_current``): it writes exactly what
the locking step writes, and writes nothing when the run moved on or the guard matched nothing."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from orchestrator.engine import (
    AssessmentScored,
    AttemptStatus,
    Event,
    TaskClaimed,
    TaskFailed,
    TaskFinished,
    TaskOutputProduced,
)
from tests.support import shell
from workers.coordination import advance as coordinator
from workers.coordination import runs
from workers.store import attempts, missions, reports
from workers.store import run_state as run_store
from workers.store.projects import ensure_project
from workers.wiring import Services

LIMITS = missions.Limits()
T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
DOCUMENT: dict[str, Any] = {
    "name": "m",
    "tasks": [
        {"title": "A", "description": "d", "assignTo": "a"},
        {"title": "B", "description": "uses A", "assignTo": "a", "dependsOn": ["A"]},
        {"title": "C", "description": "d", "assignTo": "a", "maxRetries": 1, "retryPolicy": {"backoff": 30}},
        {"title": "D", "description": "d", "assignTo": "a", "expectations": [{"criterion": "is good"}]},
        {"title": "E", "description": "uses D", "assignTo": "a", "dependsOn": ["D"]},
    ],
    "team": {"name": "t", "volatile": True, "agents": [{"name": "a", "model": "scripted/x"}]},
    "assessor": {"model": "scripted/judge", "script": [{"score": 4}]},
}


def _start(services: Services, document: dict[str, Any], now: datetime = T0) -> tuple[str, dict[str, str]]:
    with services.transaction() as conn:
        project = ensure_project(conn, "p")
        mission = missions.create_mission(conn, project, json.loads(json.dumps(document)), LIMITS)
        run_id, outcome, *_ = runs.execute(shell.uow(conn), project, mission.id, LIMITS, now)
    run_store.remember(run_id, outcome.stored)
    return run_id, {t.title: t.id for t in mission.tasks}


def _claim(db: psycopg.Connection, run_id: str, task_id: str, attempt: int, now: datetime) -> None:
    claimed = db.execute(
        attempts.CLAIM,
        {"run_id": run_id, "task_id": task_id, "attempt": attempt, "worker": "w", "was": "queued", "now": now},
    ).fetchone()
    assert claimed is not None


def _recorded(run_id: str, event: TaskFinished | TaskFailed, now: datetime, assessed: bool = False) -> attempts.Guard:
    failed = isinstance(event, TaskFailed)
    return attempts.record_result(
        run_id,
        event.task_id,
        event.attempt,
        now=now,
        status=AttemptStatus("failed" if failed else ("assessing" if assessed else "completed")),
        output=None if failed else event.output,
        error=event.error if failed else None,
        tokens_in=3,
        tokens_out=4,
        cost=0.5,
        outcomes=[],
    )


def _record(
    services: Services,
    run_id: str,
    event: TaskFinished | TaskFailed,
    now: datetime,
    *,
    one_statement: bool,
    assessed: bool = False,
) -> tuple[coordinator.AfterCommit | None, bool]:
    """Record an attempt's result the way the executor does; whether the one statement wrote it."""
    claimed: tuple[tuple[Event, datetime], ...] = ((TaskClaimed(event.task_id, event.attempt, "w"), now),)
    guard = _recorded(run_id, event, now, assessed)
    with services.autocommit() as conn:
        outcome = None
        if one_statement:
            outcome = coordinator.step_if_current(conn, run_id, event, now, guard, claimed)
        fast = outcome is not None
        if outcome is None:
            with conn.transaction():
                outcome = coordinator.step(conn, run_id, event, now, guard=guard, before=claimed)
    if outcome is not None:
        run_store.remember(run_id, outcome.stored)
    return outcome, fast


def _apply(
    services: Services,
    run_id: str,
    event: Event,
    now: datetime,
    *,
    one_statement: bool,
    before: tuple[tuple[Event, datetime], ...] = (),
) -> bool:
    """Feed an event with no guard (an output, an announcement); whether the one statement wrote it."""
    with services.autocommit() as conn:
        outcome = coordinator.step_if_current(conn, run_id, event, now, None, before) if one_statement else None
        fast = outcome is not None
        if outcome is None:
            with conn.transaction():
                outcome = coordinator.step(conn, run_id, event, now, before=before)
    assert outcome is not None and not outcome.ignored
    run_store.remember(run_id, outcome.stored)
    return fast


def _snapshot(db: psycopg.Connection, run_id: str, ids: dict[str, str]) -> str:
    """Everything a run wrote, as text with its ids replaced by task titles."""
    parts = {
        "run": db.execute(
            "SELECT status, state, version, spec_version, pause_reason, failure_reason, finished_at,"
            " (SELECT jsonb_build_array(m.status, m.updated_at, m.execution_count)"
            "    FROM missions m WHERE m.id = r.mission_id) AS mission"
            " FROM runs r WHERE id = %s",
            (run_id,),
        ).fetchone(),
        "tasks": db.execute(
            "SELECT version, state FROM run_tasks WHERE run_id = %s ORDER BY state->>'taskId'", (run_id,)
        ).fetchall(),
        "attempts": db.execute(
            "SELECT task_id, attempt, status, agent, model, prompt, output, error, tokens_in,"
            " tokens_out, cost_usd, claimed_at, finished_at, created_at FROM attempts"
            " WHERE run_id = %s ORDER BY task_id, attempt",
            (run_id,),
        ).fetchall(),
        "events": db.execute(
            "SELECT type, data, created_at FROM events WHERE run_id = %s ORDER BY id", (run_id,)
        ).fetchall(),
        "timers": db.execute(
            "SELECT kind, key, due_at FROM timers WHERE run_id = %s ORDER BY kind, key", (run_id,)
        ).fetchall(),
    }
    text = json.dumps(parts, default=str, sort_keys=True).replace(run_id, "<run>")
    for title, task_id in ids.items():
        text = text.replace(task_id, f"<{title}>")
    normal = json.loads(re.sub(r"msn_[a-z0-9]+", "<mission>", text))
    for rows in ("tasks", "attempts"):  # (in the order of their titles, not of their random ids)
        normal[rows].sort(key=lambda row: json.dumps(row, sort_keys=True))
    return json.dumps(normal, sort_keys=True)


def test_the_one_statement_step_writes_what_the_locking_step_writes(services: Services, db: psycopg.Connection) -> None:
    written: dict[bool, str] = {}
    for one_statement in (True, False):
        run_id, ids = _start(services, {**DOCUMENT, "name": f"m {one_statement}"})
        paths = []
        now = T0 + timedelta(seconds=1)
        _claim(db, run_id, ids["A"], 1, now)
        _, fast = _record(services, run_id, TaskFinished(ids["A"], 1, "alpha"), now, one_statement=one_statement)
        paths.append(fast)
        now += timedelta(seconds=1)
        _claim(db, run_id, ids["C"], 1, now)  # a failure with a retry left: its backoff timer is a write of its own
        _, fast = _record(services, run_id, TaskFailed(ids["C"], 1, "boom"), now, one_statement=one_statement)
        paths.append(fast)
        now += timedelta(seconds=1)
        _claim(db, run_id, ids["B"], 1, now)
        _, fast = _record(services, run_id, TaskFinished(ids["B"], 1, "beta"), now, one_statement=one_statement)
        paths.append(fast)
        # D is judged: its record leaves it assessing, and its score (a guard of its own) completes
        # it and starts E, whose prompt holds D's output.
        now += timedelta(seconds=1)
        _claim(db, run_id, ids["D"], 1, now)
        _, fast = _record(
            services, run_id, TaskFinished(ids["D"], 1, "delta"), now, one_statement=one_statement, assessed=True
        )
        paths.append(fast)
        paths.append(_score(services, run_id, ids["D"], now + timedelta(seconds=1), one_statement=one_statement))
        assert paths == [one_statement, False, one_statement, one_statement, one_statement]
        written[one_statement] = _snapshot(db, run_id, ids)
    assert written[True] == written[False]
    assert "uses A" in written[True] and "alpha" in written[True]  # B's prompt holds A's output
    assert "# Your task: E\\nuses D\\n\\n# Output of 'D'\\ndelta" in written[True]


def _score(
    services: Services, run_id: str, task_id: str, now: datetime, *, one_statement: bool, judged: int = 0
) -> bool:
    """Record a passing score the way the executor does (the judge used ``judged`` tokens each way
    and ``judged / 100`` dollars); whether the one statement wrote it."""
    guard = attempts.record_score(
        run_id,
        task_id,
        1,
        now=now,
        status=AttemptStatus.COMPLETED,
        score=4.0,
        assessment={"score": 4.0},
        judge_model=None,
        judge_tokens_in=judged,
        judge_tokens_out=judged,
        judge_cost=judged / 100,
    )
    event = AssessmentScored(task_id, 1, 4.0)
    with services.autocommit() as conn:
        outcome = None
        if one_statement:
            outcome = coordinator.step_if_current(conn, run_id, event, now, guard)
        fast = outcome is not None
        if outcome is None:
            with conn.transaction():
                outcome = coordinator.step(conn, run_id, event, now, guard=guard)
    assert outcome is not None and outcome.guard is not None
    run_store.remember(run_id, outcome.stored)
    return fast


def test_outputs_and_announcements_need_no_guard_and_write_what_the_locking_step_writes(
    services: Services, db: psycopg.Connection
) -> None:
    written: dict[bool, str] = {}
    for one_statement in (True, False):
        run_id, ids = _start(services, {**DOCUMENT, "name": f"streams {one_statement}"})
        now = T0 + timedelta(seconds=1)
        _claim(db, run_id, ids["A"], 1, now)
        _claim(db, run_id, ids["C"], 1, now)
        paths = [
            _apply(services, run_id, TaskClaimed(ids["A"], 1, "w"), now, one_statement=one_statement),
            _apply(
                services,
                run_id,
                TaskOutputProduced(ids["A"], 1, "al"),
                now + timedelta(seconds=1),
                one_statement=one_statement,
            ),
            _apply(
                services,
                run_id,
                TaskOutputProduced(ids["C"], 1, "ga"),
                now + timedelta(seconds=2),
                one_statement=one_statement,
                before=((TaskClaimed(ids["C"], 1, "w"), now),),
            ),
        ]
        _, fast = _record(
            services,
            run_id,
            TaskFinished(ids["A"], 1, "alpha"),
            now + timedelta(seconds=3),
            one_statement=one_statement,
        )
        assert [*paths, fast] == [one_statement] * 4
        written[one_statement] = _snapshot(db, run_id, ids)
    assert written[True] == written[False]
    assert written[True].count('"type": "task:output"') == 2


def _done(db: psycopg.Connection, run_id: str) -> dict[str, Any]:
    (done,) = db.execute("SELECT data FROM events WHERE run_id = %s AND type = 'mission:done'", (run_id,)).fetchall()
    data: dict[str, Any] = done["data"]
    return data


@pytest.mark.parametrize("ended_by", ["result", "score"])
def test_the_step_that_ends_a_run_writes_in_one_statement_what_the_locking_step_writes_report_included(
    services: Services, db: psycopg.Connection, ended_by: str
) -> None:
    # The last step records an agent's result (B after A), or a judge's verdict (D, beside A).
    last = DOCUMENT["tasks"][1] if ended_by == "result" else DOCUMENT["tasks"][3]
    written: dict[bool, str] = {}
    for one_statement in (True, False):
        run_id, ids = _start(
            services, {**DOCUMENT, "name": f"end {one_statement}", "tasks": [DOCUMENT["tasks"][0], last]}
        )
        now = T0 + timedelta(seconds=1)
        _claim(db, run_id, ids["A"], 1, now)
        _record(services, run_id, TaskFinished(ids["A"], 1, "alpha"), now, one_statement=one_statement)
        now += timedelta(seconds=2)
        if ended_by == "result":
            _claim(db, run_id, ids["B"], 1, now)
            outcome, fast = _record(
                services,
                run_id,
                TaskFinished(ids["B"], 1, "beta"),
                now + timedelta(seconds=1),
                one_statement=one_statement,
            )
            assert outcome is not None and outcome.status == "completed"
        else:
            _claim(db, run_id, ids["D"], 1, now)
            _record(
                services, run_id, TaskFinished(ids["D"], 1, "delta"), now, one_statement=one_statement, assessed=True
            )
            fast = _score(services, run_id, ids["D"], now + timedelta(seconds=3), one_statement=one_statement, judged=7)
        assert fast == one_statement
        report = _done(db, run_id)["report"]
        # What mission:done carries is what the run's report reads once the step committed.
        assert report == reports.run_report(db, run_id)
        assert report["status"] == "completed" and report["finishedAt"] is not None
        assert report["totals"]["attempts"] == 2 and report["totals"]["tokensIn"] == 6 + (
            7 if ended_by == "score" else 0
        )
        written[one_statement] = _snapshot(db, run_id, ids)
    assert written[True] == written[False]
    row = db.execute(
        "SELECT r.status, m.status AS mission FROM runs r JOIN missions m ON m.id = r.mission_id WHERE r.id = %s",
        (run_id,),
    ).fetchone()
    assert row == {"status": "completed", "mission": "completed"}


def test_a_run_ended_after_another_process_moved_it_on_gets_its_report_from_the_locking_step(
    services: Services, db: psycopg.Connection
) -> None:
    tasks = [DOCUMENT["tasks"][0], {"title": "C", "description": "d", "assignTo": "a"}]
    run_id, ids = _start(services, {**DOCUMENT, "tasks": tasks})
    now = T0 + timedelta(seconds=1)
    _moved_on_elsewhere(services, db, run_id, ids["C"], now)
    _claim(db, run_id, ids["A"], 1, now)
    outcome, fast = _record(services, run_id, TaskFinished(ids["A"], 1, "alpha"), now, one_statement=True)
    assert not fast and outcome is not None and outcome.status == "completed"
    report = _done(db, run_id)["report"]
    assert report == reports.run_report(db, run_id) and report["totals"]["attempts"] == 2


def _moved_on_elsewhere(services: Services, db: psycopg.Connection, run_id: str, task_id: str, now: datetime) -> None:
    """Another process finishes ``task_id``; this process's cache keeps the state before that step."""
    seen = run_store.CACHE.get(run_id)
    assert seen is not None
    _claim(db, run_id, task_id, 1, now)
    _record(services, run_id, TaskFinished(task_id, 1, "gamma"), now, one_statement=False)
    run_store.CACHE.forget(run_id)
    run_store.CACHE.put(run_id, seen)


def test_a_run_moved_on_elsewhere_is_not_written_and_the_locking_step_takes_over(
    services: Services, db: psycopg.Connection
) -> None:
    run_id, ids = _start(services, DOCUMENT)
    now = T0 + timedelta(seconds=1)
    _moved_on_elsewhere(services, db, run_id, ids["C"], now)
    _claim(db, run_id, ids["A"], 1, now)
    before = _snapshot(db, run_id, ids)
    event = TaskFinished(ids["A"], 1, "alpha")
    with services.autocommit() as conn:
        skipped = coordinator.step_if_current(
            conn, run_id, event, now, _recorded(run_id, event, now), ((TaskClaimed(ids["A"], 1, "w"), now),)
        )
    assert skipped is None
    assert _snapshot(db, run_id, ids) == before  # the attempt is still running, the run at version 1
    assert run_store.CACHE.likely_current(run_id) is None  # this run is now expected to move on elsewhere
    outcome, fast = _record(services, run_id, event, now, one_statement=True)
    assert not fast and outcome is not None and outcome.guard is not None
    assert [s.task_id for s in outcome.start] == [ids["B"]]
    assert db.execute("SELECT version FROM runs WHERE id = %s", (run_id,)).fetchone()["version"] == 2


def test_without_a_guard_a_run_moved_on_elsewhere_is_not_written_either(
    services: Services, db: psycopg.Connection
) -> None:
    run_id, ids = _start(services, DOCUMENT)
    now = T0 + timedelta(seconds=1)
    _moved_on_elsewhere(services, db, run_id, ids["C"], now)
    _claim(db, run_id, ids["A"], 1, now)
    before = _snapshot(db, run_id, ids)
    with services.autocommit() as conn:
        # (decided on the old state, where A is still queued: its claim comes first)
        assert (
            coordinator.step_if_current(
                conn, run_id, TaskOutputProduced(ids["A"], 1, "x"), now, None, ((TaskClaimed(ids["A"], 1, "w"), now),)
            )
            is None
        )
    assert _snapshot(db, run_id, ids) == before


def test_a_guard_that_matches_nothing_writes_nothing(services: Services, db: psycopg.Connection) -> None:
    run_id, ids = _start(services, DOCUMENT)
    before = _snapshot(db, run_id, ids)
    now = T0 + timedelta(seconds=1)
    event = TaskFinished(ids["A"], 1, "alpha")  # never claimed: the record's guard wants a running attempt
    with services.autocommit() as conn:
        outcome = coordinator.step_if_current(
            conn, run_id, event, now, _recorded(run_id, event, now), ((TaskClaimed(ids["A"], 1, "w"), now),)
        )
    assert outcome is not None and outcome.guard is None and outcome.ignored and not outcome.start
    assert _snapshot(db, run_id, ids) == before


def test_a_guard_without_a_one_statement_form_is_refused_by_the_one_statement_save(services: Services) -> None:
    run_id, _ = _start(services, DOCUMENT)
    stored = run_store.CACHE.get(run_id)
    assert stored is not None
    with services.autocommit() as conn, pytest.raises(ValueError, match="marking_lost"):
        run_store.save_if_current(
            conn, stored, stored.state, T0, False, attempts.mark_lost(run_id, "task_x", 1, now=T0)
        )
    with services.autocommit() as conn:  # and the one-statement step leaves such a step to the locking one
        assert (
            coordinator.step_if_current(
                conn, run_id, TaskFinished("task_x", 1, "x"), T0, attempts.mark_lost(run_id, "task_x", 1, now=T0)
            )
            is None
        )


def test_threads_of_one_process_take_turns_and_each_writes_in_one_statement(
    services: Services, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    width = 6
    tasks = [{"title": f"T{i}", "description": "d", "assignTo": "a"} for i in range(width)]
    run_id, ids = _start(services, {**DOCUMENT, "tasks": tasks}, datetime.now(UTC))
    paths: list[bool] = []
    original = coordinator.step_if_current

    def spy(*args: Any, **kwargs: Any) -> coordinator.AfterCommit | None:
        outcome = original(*args, **kwargs)
        paths.append(outcome is not None)
        return outcome

    monkeypatch.setattr(coordinator, "step_if_current", spy)
    executor = shell.executor(services, "test-worker")
    barrier = threading.Barrier(width)
    results: list[str] = []

    def deliver(task_id: str) -> None:
        barrier.wait()
        results.append(executor.run_attempt(run_id, task_id, 1))

    threads = [threading.Thread(target=deliver, args=(task_id,)) for task_id in ids.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == ["finished"] * width
    # Each in one statement, the step that ends the run too (its report is read before it).
    assert paths == [True] * width
    row = db.execute("SELECT status, version FROM runs WHERE id = %s", (run_id,)).fetchone()
    assert row == {"status": "completed", "version": width}
    types = [r["type"] for r in db.execute("SELECT type FROM events WHERE run_id = %s ORDER BY id", (run_id,))]
    completed = db.execute(
        "SELECT count(*) AS n FROM events WHERE run_id = %s AND type = 'task:status' AND data->>'status' = 'completed'",
        (run_id,),
    ).fetchone()
    assert completed["n"] == width and types[-1] == "mission:done"
