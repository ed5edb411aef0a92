"""Applying an event to a run: the only place a run's state changes.

Callers hand an event to ``UnitOfWork.advance`` (``Coordinator.transaction()`` for a change
that is part of a larger transaction, ``Coordinator.steps()`` or ``Coordinator.advance`` for one
that stands alone); which write path it takes is this module's business:

- **the one-statement step** (``step_if_current``): decided on the state this process last wrote
  or read of the run, written in one statement that commits on its own and writes only if the
  run row still holds that state (its version and write token). One round trip (two for the step
  that ends a run: its report is read first, ``reports.ending_report``). Threads of this
  process take turns per run (``run_state.DECIDING``), so they do not move it on under each other.
- **the locking step** (``step``): inside a transaction, the run row is locked (``SELECT ... FOR
  UPDATE``, with the guard in the same statement), ``orchestrator.engine.decide`` is applied to
  the state as locked, and the new state, attempt rows, timers and event rows are written.

Both paths write exactly the same rows (tests/integration/test_one_statement_step.py compares
them). Every write to a run happens under its row lock, so the event ids of one run are allocated
in commit order, which is what makes SSE replay by ``id > Last-Event-ID`` gap-free.

What a committed step asks of the outside world (Celery messages, cancellations, the wake-up) is
an ``AfterCommit``; the unit of work hands each one to the ``Sender`` once the step's transaction
has committed, and never before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from orchestrator import engine
from orchestrator.budget import budget_exceeded
from orchestrator.engine import (
    TERMINAL_RUN_STATUSES,
    AssessTask,
    BudgetExceeded,
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
from workers.coordination.outcome import AfterCommit, Inline, Sender
from workers.store import attempts, reports, run_state, runs, slots, timers, usage
from workers.store.attempts import Guard
from workers.store.db import Connection, Database
from workers.store.slots import SlotRequest
from workers.support import metrics, tracing
from workers.support.clock import utcnow

log = logging.getLogger(__name__)

Before = tuple[tuple[Event, datetime], ...]


# -- the two write paths ---------------------------------------------------------------------------
def step(
    conn: Connection, run_id: str, event: Event, now: datetime, guard: Guard | None = None, before: Before = ()
) -> AfterCommit | None:
    """The locking step: apply one event to a run inside the caller's transaction; None if the run
    no longer exists.

    With a ``guard`` (an attempt's change written in the statement that locks the run row), the
    event is applied only when the guard matched, which ``AfterCommit.guard`` then holds; otherwise
    the outcome is ignored with ``guard`` None. Events in ``before`` (each with its own time) are
    applied first, in the same decision (``engine.decide_all``)."""
    started = time.perf_counter()
    if guard is None:
        stored, passed = run_state.load(conn, run_id), None
    else:
        stored, passed = run_state.lock_guarded(conn, run_id, guard)
    if stored is None:
        return None
    state = stored.state
    if guard is not None and passed is None:
        return AfterCommit(
            state.mission_id, run_id, status=str(state.status), ignored="guard matched nothing", stored=stored
        )
    decision = engine.decide_all(state, (*before, (event, now))) if before else engine.decide(state, event, now)
    if decision.ignored is not None:
        log.debug(
            "run %s ignored %s: %s",
            run_id,
            type(event).__name__,
            decision.ignored,
            extra={"run_id": run_id, "mission_id": state.mission_id},
        )
        outcome = AfterCommit(
            state.mission_id, run_id, status=str(state.status), ignored=decision.ignored, stored=stored
        )
    else:
        outcome = _persist(conn, stored, decision, now)
    outcome.guard = passed
    metrics.observe_step(time.perf_counter() - started)
    return outcome


def step_if_current(
    conn: Connection, run_id: str, event: Event, now: datetime, guard: Guard | None = None, before: Before = ()
) -> AfterCommit | None:
    """The one-statement step (``conn`` in autocommit), decided on the state this process holds of
    the run instead of one read under the lock: one round trip where ``step`` takes four (BEGIN,
    lock, write, COMMIT).

    None, with nothing written, when that does not apply and the caller must ``step``: no cached
    state (or another process was seen moving the run on), an ignored event, a decision with
    writes of its own (timers, cancellations, a new spec, removed tasks), a guard no one-statement
    step records, a run ended by a step without a guard or whose report cannot be figured before
    the statement, or a run that moved on meanwhile."""
    if guard is not None and not run_state.records_in_one_statement(guard):
        return None
    with run_state.DECIDING.hold(run_id):
        cached = run_state.CACHE.likely_current(run_id)
        if cached is None:
            return None
        started = time.perf_counter()
        state = cached.state
        decision = engine.decide_all(state, (*before, (event, now))) if before else engine.decide(state, event, now)
        after = decision.state
        if decision.ignored is not None or after.spec is not state.spec or not after.tasks.keys() >= state.tasks.keys():
            return None
        out, writes = _gather(after, decision.effects)
        ending = _ends_run(state, after)
        if writes or (ending and guard is None):
            return None
        _add_prompts(after, out.rows)
        if ending:  # its mission:done carries the report the statement will leave
            assert guard is not None
            report = reports.ending_report(conn, after, now, guard)
            if report is None:
                return None
            out.rows.add_report(report)
        written = run_state.save_if_current(
            conn,
            cached,
            after,
            now,
            after.status in TERMINAL_RUN_STATUSES,
            guard,
            changed_ids=decision.changed_tasks,
            rows=out.rows,
            mirror=after.status is not state.status,
        )
        if written is None:
            log.debug(
                "run %s moved on elsewhere since version %s; the step takes the lock",
                run_id,
                cached.version,
                extra={"run_id": run_id, "mission_id": state.mission_id},
            )
            return None
        if written.stored is None:
            return AfterCommit(
                state.mission_id, run_id, status=str(state.status), ignored="guard matched nothing", stored=cached
            )
        out.stored, out.last_event_id, out.guard = written.stored, written.last_event_id, written.guard
        out.deliveries = written.deliveries
        metrics.count_events(out.rows.event_types)
        out.rows = run_state.Rows()
        metrics.observe_step(time.perf_counter() - started)
        return out


def begin(
    conn: Connection,
    run_id: str,
    number: int,
    spec: MissionSpec,
    mission_id: str,
    now: datetime,
    run_input: Mapping[str, Any] | None = None,
) -> AfterCommit:
    """Insert run ``number`` of a mission with its initial state, inside the caller's transaction
    (``run_input``: the run's own data as given, recorded on the run; ``spec`` has it merged in)."""
    decision = engine.start_run(run_id, mission_id, spec, now)
    state = decision.state
    outcome, writes = _gather(state, decision.effects)
    _add_prompts(state, outcome.rows)
    outcome.stored, outcome.last_event_id, outcome.deliveries = run_state.create(
        conn,
        state,
        number=number,
        deadline=engine.run_deadline(spec, now),
        now=now,
        terminal=state.status in TERMINAL_RUN_STATUSES,
        rows=outcome.rows,
        run_input=run_input,
    )
    _write(conn, state.run_id, writes, now)  # timers (the deadline) refer to the run row, inserted just now
    slots.request(conn, state.run_id, writes.slots, now)  # (after the attempt rows they refer to)
    if state.status in TERMINAL_RUN_STATUSES:  # (a run with nothing it can start ends at once)
        reports.attach_report_to_done(conn, state.run_id)
    metrics.count_events(outcome.rows.event_types)
    outcome.rows = run_state.Rows()
    return outcome


def _persist(conn: Connection, before: run_state.Stored, decision: Decision, now: datetime) -> AfterCommit:
    """Write a decision's state and in-transaction effects; return the after-commit ones."""
    state = decision.state
    terminal = state.status in TERMINAL_RUN_STATUSES
    if state.status is not before.state.status:
        run_state.mirror_mission(conn, state, now, terminal=terminal)
    outcome, writes = _gather(state, decision.effects)
    _write(conn, state.run_id, writes, now)
    _add_prompts(state, outcome.rows)
    # The state, the attempts the step starts and its events go to Postgres in one statement.
    outcome.stored, outcome.last_event_id, outcome.deliveries = run_state.save(
        conn, before, state, now, terminal=terminal, changed_ids=decision.changed_tasks, rows=outcome.rows
    )
    slots.request(conn, state.run_id, writes.slots, now)  # (after the attempt rows they refer to)
    if _ends_run(before.state, state):
        reports.attach_report_to_done(conn, state.run_id)  # (after the step's attempt rows and events)
    metrics.count_events(outcome.rows.event_types)
    outcome.rows = run_state.Rows()
    return outcome


def _ends_run(before: RunState, after: RunState) -> bool:
    """Whether a step ends the run (its ``mission:done`` then carries the run's report: figured
    before the one statement from what its guard records, ``reports.ending_report``, or read after
    the locking step's own writes, ``reports.attach_report_to_done``)."""
    return after.status in TERMINAL_RUN_STATUSES and after.status is not before.status


class _Writes:
    """What a step writes besides its state, attempts and events: timers (in the order decided),
    the attempts it cancels, and the slots its attempts of shared-limit agents wait for. A step
    with any of these cannot take the one-statement path."""

    __slots__ = ("cancels", "slots", "timers")

    def __init__(self) -> None:
        self.timers: list[timers.TimerChange] = []
        self.cancels: list[tuple[str, int, str]] = []
        self.slots: list[SlotRequest] = []

    def __bool__(self) -> bool:
        return bool(self.timers or self.cancels or self.slots)


def _gather(state: RunState, effects: tuple[engine.Effect, ...]) -> tuple[AfterCommit, _Writes]:
    """Sort a decision's effects: after-commit ones and rows into an ``AfterCommit``, and the writes
    (cancelled attempts, timers) to make in the transaction."""
    out = AfterCommit(state.mission_id, state.run_id, status=str(state.status))
    rows = out.rows
    writes = _Writes()
    shared = state.spec.shared_agent_limits  # (empty for most missions: then nothing below looks)
    for effect in effects:
        match effect:
            case StartTask():
                rows.attempts.append(
                    {
                        "task_id": effect.task_id,
                        "attempt": effect.attempt,
                        "agent": effect.agent,
                        "model": effect.model,
                        "prompt": None,
                    }
                )
                out.start.append(effect)
                if shared and effect.agent in shared:
                    limit = shared[effect.agent]
                    writes.slots.append(SlotRequest(effect.agent, effect.task_id, effect.attempt, limit))
                    out.slot_starts.add((effect.task_id, effect.attempt))
                    out.slot_agents.add(effect.agent)
            case AssessTask():
                out.assess.append(effect)
            case CancelTask():
                writes.cancels.append((effect.task_id, effect.attempt, effect.reason))
                out.cancel.append(effect)
            case ScheduleTimer():
                writes.timers.append(timers.TimerChange(effect.kind, effect.key, effect.due_at))
            case CancelTimer():
                writes.timers.append(timers.TimerChange(effect.kind, effect.key))
            case PublishEvent():
                rows.event_types.append(effect.type)
                rows.event_data.append(dict(effect.data))
                if shared and effect.type == "task:status" and effect.data.get("status") not in _HOLDING_SLOT:
                    agent = effect.data.get("agent")
                    if isinstance(agent, str) and agent in shared:
                        out.slot_agents.add(agent)  # its attempt stopped holding a slot: grant the next
            case _:
                raise AssertionError(f"unknown effect {effect!r}")
    return out, writes


# A task in one of these holds its agent's slot (its attempt is queued or running).
_HOLDING_SLOT = frozenset({"queued", "running"})


def _write(conn: Connection, run_id: str, writes: _Writes, now: datetime) -> None:
    timers.apply(conn, run_id, writes.timers)
    attempts.cancel(conn, run_id, writes.cancels, now)


def _add_prompts(state: RunState, rows: run_state.Rows) -> None:
    if rows.attempts:
        texts = prompts(state, [a["task_id"] for a in rows.attempts])
        for item in rows.attempts:
            item["prompt"] = texts[item["task_id"]]


def prompts(state: RunState, task_ids: list[str]) -> dict[str, str]:
    """The prompt of the next attempt of each task (DESIGN §4 "Data flow"), from ``state``: a task
    starts once its dependencies completed, and a completed task's state holds the output of the
    attempt that completed it (and, for a task a reviewer sent back, its own previous output)."""
    tasks = [state.task_spec(task_id) for task_id in task_ids]
    outputs = {title: state.task_by_title(title).output or "" for task in tasks for title in task.depends_on}
    prompts: dict[str, str] = {}
    for task in tasks:
        current = state.tasks[task.id or ""]
        text = build_prompt(state.spec, task, outputs, current.feedback, current.review, current.output)
        prompts[task.id or ""] = no_nul(text)
    return prompts


def no_nul(text: str) -> str:
    """Postgres text and JSON cannot hold NUL characters; a model or a user may still send them."""
    return text.replace("\x00", "")


def _enforce_budget(
    conn: Connection, run_id: str, outcome: AfterCommit | None, now: datetime, budget: Mapping[str, Any] | None
) -> AfterCommit | None:
    """Stop a live run whose recorded usage is over its mission's budget (same transaction)."""
    if outcome is None or not budget or outcome.status in TERMINAL_RUN_STATUSES:
        return outcome
    why = budget_exceeded(budget, usage.run_totals(conn, run_id))
    if why is None:
        return outcome
    log.warning("run %s is over its budget and stops: %s", run_id, why)
    stopped = step(conn, run_id, BudgetExceeded(), now)
    outcome.start.clear()  # the attempts this step started were cancelled by the stop
    return outcome.merge(stopped)


# -- the one interface -------------------------------------------------------------------------------
class UnitOfWork:
    """Changes to runs whose after-commit effects are sent once they are committed, in order.

    ``advance`` is the one way to apply an event to a run. Made by ``Coordinator.transaction()``
    (every change in one transaction: the locking step) or ``Coordinator.steps()`` (each change
    commits on its own: the one-statement step when it applies)."""

    def __init__(self, conn: Connection, *, atomic: bool) -> None:
        self.conn = conn
        self.atomic = atomic
        self._due: list[tuple[AfterCommit, Inline | None]] = []

    def advance(
        self,
        run_id: str,
        event: Event,
        now: datetime,
        *,
        guard: Guard | None = None,
        before: Before = (),
        budget: Mapping[str, Any] | None = None,
        inline: Inline | None = None,
    ) -> AfterCommit | None:
        """Apply ``event`` (after the events of ``before``) to the run and return what the step did;
        None when the run no longer exists. With a ``guard`` the event applies only when the guard
        matched (``AfterCommit.guard`` is its row). With a ``budget``, a run whose recorded usage
        went over it stops in the same transaction. ``inline`` (a worker thread) runs the assessments
        the step asks for in this thread after commit, and may take a started attempt to run next
        (``workers.messaging.dispatch.Dispatcher.send``), instead of sending them to the broker."""
        with tracing.span("missions.step", {**tracing.ids(run_id), "missions.event": type(event).__name__}):
            outcome = None
            if not self.atomic:
                if not budget:
                    outcome = step_if_current(self.conn, run_id, event, now, guard, before)
                if outcome is None:
                    with self.conn.transaction():
                        outcome = self._locking(run_id, event, now, guard, before, budget)
            else:
                outcome = self._locking(run_id, event, now, guard, before, budget)
            if outcome is not None:
                tracing.annotate({"missions.mission_id": outcome.mission_id})
                self._due.append((outcome, inline))
            return outcome

    def _locking(
        self,
        run_id: str,
        event: Event,
        now: datetime,
        guard: Guard | None,
        before: Before,
        budget: Mapping[str, Any] | None,
    ) -> AfterCommit | None:
        outcome = step(self.conn, run_id, event, now, guard=guard, before=before)
        if outcome is not None and (guard is None or outcome.guard is not None):
            outcome = _enforce_budget(self.conn, run_id, outcome, now, budget)
        return outcome

    def begin_run(
        self,
        run_id: str,
        number: int,
        spec: MissionSpec,
        mission_id: str,
        now: datetime,
        run_input: Mapping[str, Any] | None = None,
    ) -> AfterCommit:
        """Insert run ``number`` of the mission (a transaction's unit of work only)."""
        if not self.atomic:
            raise RuntimeError("a run begins inside a transaction (Coordinator.transaction())")
        with tracing.span("missions.step", {**tracing.ids(run_id, mission_id), "missions.event": "RunStarted"}):
            outcome = begin(self.conn, run_id, number, spec, mission_id, now, run_input)
        self._due.append((outcome, None))
        return outcome

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested transaction: when the block raises, its writes and the sends it queued are dropped."""
        queued = len(self._due)
        try:
            with self.conn.transaction():
                yield
        except BaseException:
            del self._due[queued:]
            raise

    def _take_due(self) -> list[tuple[AfterCommit, Inline | None]]:
        due, self._due = self._due, []
        return due


class Coordinator:
    """Makes units of work on the process's database and sends what they committed."""

    def __init__(self, db: Database, sender: Sender) -> None:
        self.db = db
        self.sender = sender

    @contextmanager
    def transaction(self) -> Iterator[UnitOfWork]:
        """One transaction (``uow.conn``): every ``advance`` takes the locking step; what the changes
        ask for is sent after the commit, and nothing when the block raises (rolled back)."""
        with self.db.transaction() as conn:
            uow = UnitOfWork(conn, atomic=True)
            yield uow
        self._send(uow._take_due())

    @contextmanager
    def steps(self) -> Iterator[UnitOfWork]:
        """Changes that each commit on their own (``uow.conn`` in autocommit); what they ask for is
        sent when the block ends, also when it raises (they committed)."""
        due: list[tuple[AfterCommit, Inline | None]] = []
        try:
            with self.db.autocommit() as conn:
                uow = UnitOfWork(conn, atomic=False)
                try:
                    yield uow
                finally:
                    due = uow._take_due()
        finally:
            self._send(due)  # (after the connection went back to the pool)

    def advance(
        self,
        run_id: str,
        event: Event,
        now: datetime,
        *,
        guard: Guard | None = None,
        before: Before = (),
        budget: Mapping[str, Any] | None = None,
        inline: Inline | None = None,
    ) -> AfterCommit | None:
        """``UnitOfWork.advance`` as a change of its own, sent as soon as it committed."""
        with self.steps() as uow:
            return uow.advance(run_id, event, now, guard=guard, before=before, budget=budget, inline=inline)

    def after_commit(self, outcome: AfterCommit | None, inline: Inline | None = None) -> None:
        """Send what a step committed by a caller's own transaction asks for (``step`` and ``begin``
        called directly, as the tests of the write paths do); everything else goes through a unit
        of work, which sends on its own."""
        if outcome is not None:
            self._send([(outcome, inline)])

    def _send(self, due: list[tuple[AfterCommit, Inline | None]]) -> None:
        for outcome, inline in due:
            run_state.remember(outcome.run_id, outcome.stored)  # the state it wrote or read is committed
            if outcome.start:  # (/metrics: missions_attempts_total, missions_retries_total)
                metrics.count_attempts(len(outcome.start), sum(1 for s in outcome.start if s.attempt > 1))
            if outcome.slot_agents:
                self._grant_slots(outcome)
            self.sender.send(outcome, inline)

    def _grant_slots(self, outcome: AfterCommit) -> None:
        """Grant the free slots of the reusable agents the step touched (project-wide, so a waiter of
        another run may get one), keep back the step's attempts still waiting, and send the granted
        attempts of other runs. A grant that fails is logged: the tick grants what is free."""
        try:
            granted, traces = grant_slots(self.db, outcome.run_id, outcome.slot_agents, utcnow())
        except Exception:
            log.exception("could not grant agent slots after a step of run %s; the tick will", outcome.run_id)
            granted, traces = [], {}
        mine = {(task_id, attempt) for run_id, task_id, attempt in granted if run_id == outcome.run_id}
        waiting = outcome.slot_starts - mine
        outcome.start = [s for s in outcome.start if (s.task_id, s.attempt) not in waiting]
        starting = {(s.task_id, s.attempt) for s in outcome.start}
        others: dict[str, list[StartTask]] = {}
        for run_id, task_id, attempt in granted:
            if run_id != outcome.run_id or (task_id, attempt) not in starting:
                others.setdefault(run_id, []).append(StartTask(task_id, attempt, "", ""))
        for run_id, start in others.items():
            # Only the messages: the attempts and their events were committed by their own steps. Another
            # run's are sent in that run's trace (while tracing is on), not in this step's.
            mission_id = outcome.mission_id if run_id == outcome.run_id else ""
            with tracing.continued(traces.get(run_id), "missions.slot_grant", tracing.ids(run_id)):
                self.sender.send(AfterCommit(mission_id, run_id, start=start))


def grant_slots(
    db: Database, run_id: str, agents: Iterable[str], now: datetime
) -> tuple[list[slots.Key], dict[str, str]]:
    """Grant the free project-wide slots of ``agents`` (agents of run ``run_id``) in one transaction:
    the attempts granted, for the caller to send, and (while tracing is on) the stored trace context
    of each other run granted one, read in the same transaction."""
    with db.transaction() as conn:
        project_id = slots.project_of(conn, run_id)
        if project_id is None:
            return [], {}
        granted = [key for agent in sorted(agents) for key in slots.grant(conn, project_id, agent, now)]
        others = sorted({key[0] for key in granted} - {run_id})
        traces = runs.run_traces(conn, others) if others and tracing.enabled() else {}
        return granted, traces
