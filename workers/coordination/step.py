"""The coordinator step: the only place a run's state changes.

``step`` locks the run row (``SELECT ... FOR UPDATE``), feeds one event to the pure
``orchestrator.engine.decide``, writes the new state, the attempt rows, timers and event-log rows
in the caller's transaction, and returns an ``AfterCommit`` listing what may only happen once the
transaction has committed: sending Celery messages, signalling cancellations, publishing the
wake-up. Because every write to a run happens under its row lock, the event ids of one run are
allocated in commit order, which is what makes SSE replay by ``id > Last-Event-ID`` gap-free.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from orchestrator import engine
from orchestrator.engine import (
    AssessTask,
    CancelTask,
    CancelTimer,
    Decision,
    Event,
    PublishEvent,
    RunState,
    ScheduleTimer,
    StartTask,
)
from orchestrator.prompt import build_prompt
from orchestrator.spec import MissionSpec
from workers.support import metrics
from workers.store import run_state as run_store

log = logging.getLogger(__name__)

TERMINAL = ("completed", "failed", "cancelled")

_CANCEL_ATTEMPT = """
UPDATE attempts SET status = 'cancelled', error = %(reason)s, finished_at = %(now)s
 WHERE run_id = %(run_id)s AND task_id = %(task_id)s AND attempt = %(attempt)s
   AND status = ANY(%(live)s)
"""

_UPSERT_TIMER = """
INSERT INTO timers (run_id, kind, key, due_at) VALUES (%(run_id)s, %(kind)s, %(key)s, %(due_at)s)
ON CONFLICT (run_id, kind, key) DO UPDATE SET due_at = EXCLUDED.due_at
"""

_DELETE_TIMER = "DELETE FROM timers WHERE run_id = %(run_id)s AND kind = %(kind)s AND key = %(key)s"


@dataclass
class AfterCommit:
    """What a committed step asks of the outside world."""

    mission_id: str
    run_id: str
    start: list[StartTask] = field(default_factory=list)
    assess: list[AssessTask] = field(default_factory=list)
    cancel: list[CancelTask] = field(default_factory=list)
    last_event_id: int | None = None
    status: str = ""
    ignored: str | None = None
    stored: run_store.Stored | None = None  # the state this step read or wrote, cached after commit
    rows: run_store.Rows = field(default_factory=run_store.Rows)  # attempts and events, not yet written
    guard: dict[str, Any] | None = None  # the row the step's guard returned

    @property
    def state(self) -> RunState | None:
        return self.stored.state if self.stored is not None else None

    def merge(self, other: AfterCommit | None) -> AfterCommit:
        if other is None:
            return self
        self.start += other.start
        self.assess += other.assess
        self.cancel += other.cancel
        if other.last_event_id is not None:
            self.last_event_id = max(self.last_event_id or 0, other.last_event_id)
        self.status = other.status or self.status
        if other.stored is not None and (self.stored is None or other.stored.version >= self.stored.version):
            self.stored = other.stored
        return self


def step(conn: psycopg.Connection[Any], run_id: str, event: Event, now: datetime,
         guard: run_store.Guard | None = None,
         before: tuple[tuple[Event, datetime], ...] = ()) -> AfterCommit | None:
    """Apply one event to a run inside the caller's transaction; None if the run no longer exists.

    With a ``guard`` (a data-modifying statement run in the same round trip as the lock), the
    event is applied only when the guard returned a row, which ``AfterCommit.guard`` then holds;
    otherwise the outcome is ignored with ``guard`` None. Events in ``before`` (each with its own
    time) are applied first, in the same decision (``engine.decide_all``)."""
    started = time.perf_counter()
    if guard is None:
        stored, passed = run_store.load(conn, run_id), None
    else:
        stored, passed = run_store.lock_guarded(conn, run_id, guard)
    if stored is None:
        return None
    state = stored.state
    if guard is not None and passed is None:
        return AfterCommit(state.mission_id, run_id, status=str(state.status), ignored="guard matched nothing",
                           stored=stored)
    decision = engine.decide_all(state, (*before, (event, now))) if before else engine.decide(state, event, now)
    if decision.ignored is not None:
        log.debug("run %s ignored %s: %s", run_id, type(event).__name__, decision.ignored,
                  extra={"run_id": run_id, "mission_id": state.mission_id})
        outcome = AfterCommit(state.mission_id, run_id, status=str(state.status), ignored=decision.ignored,
                              stored=stored)
    else:
        outcome = persist(conn, stored, decision, now)
    outcome.guard = passed
    metrics.observe_step(time.perf_counter() - started)
    return outcome


def persist(conn: psycopg.Connection[Any], before: run_store.Stored, decision: Decision, now: datetime) -> AfterCommit:
    """Write a decision's state and in-transaction effects; return the after-commit ones."""
    state = decision.state
    status = str(state.status)
    if state.status is not before.state.status:
        conn.execute(run_store.MIRROR_MISSION, {"status": status, "now": now, "mission_id": state.mission_id,
                                       "run_id": state.run_id, "terminal": status in TERMINAL})
    outcome = apply_effects(conn, state, decision.effects, now)
    # The state, the attempts the step starts and its events go to Postgres in one statement.
    outcome.stored, outcome.last_event_id = run_store.save(
        conn, before, state, now, terminal=status in TERMINAL, changed_ids=decision.changed_tasks,
        rows=outcome.rows)
    metrics.count_events(outcome.rows.event_types)
    outcome.rows = run_store.Rows()
    return outcome


def step_if_current(conn: psycopg.Connection[Any], run_id: str, event: Event, now: datetime,
                    guard: run_store.Guard | None = None, before: tuple[tuple[Event, datetime], ...] = ()
                    ) -> AfterCommit | None:
    """``step`` in one statement that commits on its own (``conn`` in autocommit), decided on the
    state this process holds of the run instead of one read under the lock: one round trip where
    ``step`` takes four (BEGIN, lock, write, COMMIT). The statement writes only if the run row
    still holds that state; threads of this process take turns per run, so they do not move it
    on under each other.

    None, with nothing written, when that does not apply and the caller must ``step``: no cached
    state (or another process was seen moving the run on), an ignored event, a decision with
    writes of its own (timers, cancellations, a new spec, removed tasks), or a run that moved on
    meanwhile."""
    with run_store.DECIDING.hold(run_id):
        cached = run_store.CACHE.likely_current(run_id)
        if cached is None:
            return None
        started = time.perf_counter()
        state = cached.state
        decision = engine.decide_all(state, (*before, (event, now))) if before else engine.decide(state, event, now)
        after = decision.state
        if decision.ignored is not None or after.spec is not state.spec or not after.tasks.keys() >= state.tasks.keys():
            return None
        out, statements = _gather(after, decision.effects, now)
        if statements:
            return None
        _add_prompts(after, out.rows)
        status = str(after.status)
        written = run_store.save_if_current(
            conn, cached, after, now, status in TERMINAL, guard, changed_ids=decision.changed_tasks,
            rows=out.rows, mirror=after.status is not state.status)
        if written is None:
            log.debug("run %s moved on elsewhere since version %s; the step takes the lock", run_id, cached.version,
                      extra={"run_id": run_id, "mission_id": state.mission_id})
            return None
        if written.stored is None:
            return AfterCommit(state.mission_id, run_id, status=str(state.status),
                               ignored="guard matched nothing", stored=cached)
        out.stored, out.last_event_id, out.guard = written.stored, written.last_event_id, written.guard
        metrics.count_events(out.rows.event_types)
        out.rows = run_store.Rows()
        metrics.observe_step(time.perf_counter() - started)
        return out


def apply_effects(conn: psycopg.Connection[Any], state: RunState, effects: tuple[Any, ...], now: datetime
                  ) -> AfterCommit:
    """Carry out the in-transaction effects (cancelled attempts, timers) and gather the rows the
    caller writes with the state (``out.rows``: the attempts started, with their prompts, and the
    events); return the after-commit effects."""
    out, statements = _gather(state, effects, now)
    _execute(conn, statements)
    _add_prompts(state, out.rows)
    return out


Statement = tuple[str, list[dict[str, Any]]]


def _gather(state: RunState, effects: tuple[Any, ...], now: datetime) -> tuple[AfterCommit, list[Statement]]:
    """Sort a decision's effects: after-commit ones and rows into an ``AfterCommit``, and the
    statements (cancelled attempts, timers) to run in the transaction."""
    out = AfterCommit(state.mission_id, state.run_id, status=str(state.status))
    rows = out.rows
    cancels: list[dict[str, Any]] = []
    statements: list[Statement] = []
    for effect in effects:
        match effect:
            case StartTask():
                rows.attempts.append({"task_id": effect.task_id, "attempt": effect.attempt,
                                      "agent": effect.agent, "model": effect.model, "prompt": None})
                out.start.append(effect)
            case AssessTask():
                out.assess.append(effect)
            case CancelTask():
                cancels.append({"run_id": state.run_id, "task_id": effect.task_id, "attempt": effect.attempt,
                                "reason": effect.reason, "now": now, "live": ["queued", "running"]})
                out.cancel.append(effect)
            case ScheduleTimer():
                statements.append((_UPSERT_TIMER, [{"run_id": state.run_id, "kind": effect.kind, "key": effect.key,
                                                    "due_at": effect.due_at}]))
            case CancelTimer():
                statements.append((_DELETE_TIMER, [{"run_id": state.run_id, "kind": effect.kind, "key": effect.key}]))
            case PublishEvent():
                rows.event_types.append(effect.type)
                rows.event_data.append(dict(effect.data))
            case _:
                raise AssertionError(f"unknown effect {effect!r}")
    if cancels:
        statements.append((_CANCEL_ATTEMPT, cancels))
    return out, statements


def _execute(conn: psycopg.Connection[Any], statements: list[Statement]) -> None:
    with conn.cursor() as cur:
        for sql, params in statements:
            if len(params) == 1:
                cur.execute(sql, params[0])
            else:
                cur.executemany(sql, params)


def _add_prompts(state: RunState, rows: run_store.Rows) -> None:
    if rows.attempts:
        texts = prompts(state, [a["task_id"] for a in rows.attempts])
        for item in rows.attempts:
            item["prompt"] = texts[item["task_id"]]


def prompts(state: RunState, task_ids: list[str]) -> dict[str, str]:
    """The prompt of the next attempt of each task (DESIGN §4 "Data flow"), from ``state``: a task
    starts once its dependencies completed, and a completed task's state holds the output of the
    attempt that completed it."""
    tasks = [state.task_spec(task_id) for task_id in task_ids]
    outputs = {title: state.task_by_title(title).output or "" for task in tasks for title in task.depends_on}
    return {task.id or "": no_nul(build_prompt(state.spec, task, outputs, state.tasks[task.id or ""].feedback))
            for task in tasks}


def no_nul(text: str) -> str:
    """Postgres text and JSON cannot hold NUL characters; a model or a user may still send them."""
    return text.replace("\x00", "")


def begin(conn: psycopg.Connection[Any], run_id: str, number: int, spec: MissionSpec, mission_id: str,
          now: datetime) -> AfterCommit:
    """Insert run ``number`` of a mission with its initial state, inside the caller's transaction."""
    decision = engine.start_run(run_id, mission_id, spec, now)
    state = decision.state
    outcome, statements = _gather(state, decision.effects, now)
    _add_prompts(state, outcome.rows)
    outcome.stored, outcome.last_event_id = run_store.create(
        conn, state, number=number, deadline=engine.run_deadline(spec, now), now=now,
        terminal=str(state.status) in TERMINAL, rows=outcome.rows)
    _execute(conn, statements)  # timers (the deadline) refer to the run row, inserted just now
    metrics.count_events(outcome.rows.event_types)
    outcome.rows = run_store.Rows()
    return outcome
