"""Running one attempt of one task, and assessing it, on a worker.

The order is what makes delivery at-least-once safe: claim the attempt in Postgres (a second
delivery finds it claimed and stops), run the agent outside any transaction while a heartbeat
thread proves the worker alive and watches for cancellation, then record the result and run the
coordinator step in one transaction, and only after commit send what comes next. The heartbeat
is one watcher thread per process (``workers.execution.heartbeat``), not a thread per attempt.

Model output is coalesced by an ``OutputBatcher`` into at most one ``task:output`` event per
``OUTPUT_INTERVAL`` per attempt (each event is a coordinator step under the run lock). After an
attempt or its assessment is recorded, a mission ``budget`` is checked against the run's totals
in the same transaction, and a run over it is stopped with ``BudgetExceeded``.

Eager hand-off (Temporal's eager activity dispatch is the precedent): when the step that records a
result (or a verdict) starts a dependent, the thread that ran it runs that attempt next itself
instead of sending it through the broker (``Executor.take``), while it has worked on one delivered
message for less than ``MISSIONS_EAGER_HANDOFF_SECONDS`` and its worker is not shutting down. The
attempt row is committed first and claimed as any other, so a thread that dies in between leaves a
queued attempt the tick sends again, and a duplicate delivery finds it claimed. The attempts of a
message of several (started together) run the same way after its first one, until the thread has
not started one of them for ``MISSIONS_BATCH_RELEASE_SECONDS`` (``workers.execution.batches``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from config import Settings
from orchestrator.engine import (
    TERMINAL_RUN_STATUSES,
    AssessmentScored,
    AttemptStatus,
    Event,
    RunState,
    StartTask,
    TaskClaimed,
    TaskFailed,
    TaskFinished,
    TaskOutputProduced,
    assessment_passes,
    attempt_status_after_assessment,
    attempt_status_after_result,
)
from orchestrator.failures import ErrorCode
from orchestrator.spec import AgentSpec
from workers.coordination.advance import Coordinator, no_nul, prompts
from workers.coordination.outcome import AfterCommit
from workers.execution.agents import AgentCall, AgentResult, Emit
from workers.execution.assessment import (
    AssessmentContext,
    Judgement,
    JudgeRequest,
    judge,
    missing_outcomes,
    score_expectations,
)
from workers.execution.batches import Batch, Releaser
from workers.execution.heartbeat import Heartbeats, Key
from workers.execution.providers import Providers, endpoint_config
from workers.execution.runtimes import runtime_for
from workers.store import attempts, run_state
from workers.store.db import Database, is_transient
from workers.support import metrics, tracing
from workers.support.clock import utcnow
from workers.support.logs import log_ids

log = logging.getLogger(__name__)

ANNOUNCE_AFTER = 0.2  # seconds an agent may run before its claim is announced on its own (see _Claim)
OUTPUT_INTERVAL = 0.1  # seconds between two task:output events of one attempt (at most ~10 a second)
RETRY_FIRST_SECONDS = 0.2  # the first wait before recording a result again after a transient database error
RETRY_MAX_SECONDS = 5.0  # ... doubling up to this
RETRY_WINDOWS = 3  # ... for up to this many worker-lost windows (settings.worker_lost_seconds)

T = TypeVar("T")


class OutputBatcher:
    """Coalesces streamed text into at most one send per ``interval`` seconds.

    The first chunk goes out at once; chunks arriving within the interval after a send wait and go
    out together when it has passed. ``add`` never blocks on the database (a flusher thread
    sends), so a model stream is never slowed by it; ``close`` sends what is left, in order.
    """

    def __init__(self, send: Callable[[str], None], interval: float = OUTPUT_INTERVAL) -> None:
        self._send = send
        self._interval = interval
        self._parts: list[str] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._closing = threading.Event()
        self._last = float("-inf")
        self.sent = 0
        self._trace = tracing.capture()  # the attempt's: its output steps belong to its trace
        self._thread = threading.Thread(target=self._loop, name="output-batcher", daemon=True)
        self._thread.start()

    def add(self, chunk: str) -> None:
        if not chunk:
            return
        with self._lock:
            self._parts.append(chunk)
        self._ready.set()

    def close(self) -> None:
        self._closing.set()
        self._ready.set()
        self._thread.join(10)
        self._flush()

    def _loop(self) -> None:
        with tracing.restored(self._trace):
            self._wait_and_flush()

    def _wait_and_flush(self) -> None:
        while True:
            self._ready.wait()
            if self._closing.is_set():
                return
            wait = self._last + self._interval - time.monotonic()
            if wait > 0 and self._closing.wait(wait):
                return
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            self._ready.clear()
            text = "".join(self._parts)
            self._parts.clear()
        if not text:
            return
        self._last = time.monotonic()
        try:
            self._send(text)
            self.sent += 1
        except Exception:  # output events are a live view; the final output is recorded anyway
            log.warning("could not publish output", exc_info=True)


def _text(text: str | None) -> str | None:
    return no_nul(text) if text else text


@dataclass(eq=False)
class _Claim:
    """An attempt this worker claimed, and whether the run has been told (``TaskClaimed``).

    The claim commits on its own and the announcement comes with the attempt's first step: its
    first output, its result (a quick agent: claim and result in one step, one write), or, for an
    agent still running after ``ANNOUNCE_AFTER`` seconds, the heartbeat watcher. Until then the run
    still shows the task ``queued`` while its attempt row is ``running``; a reaper that finds that
    row lost applies the claim before the loss (``workers.coordination.tick``). ``lock`` keeps the announcement
    to exactly one step."""

    event: TaskClaimed
    at: datetime
    announced: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    trace: Any = None  # the attempt's trace context, for the watcher's announcement (another thread)

    def pending(self) -> tuple[tuple[Event, datetime], ...]:
        return () if self.announced else ((self.event, self.at),)


@dataclass
class _HandOff:
    """The attempt a step handed to the thread that ran it (``Executor.take``), to run next."""

    until: float  # time.monotonic() after which the thread takes no more
    next: tuple[str, str, int] | None = None
    taken: int = 0


@dataclass
class _Tried:
    """How recording one result went so far (see ``Executor._durably``)."""

    committed: bool = False  # this try's step returned: it committed (or matched nothing)
    retried: bool = False  # an earlier try failed; it may have committed before its answer was lost


class Executor:
    """Runs attempts and assessments for one worker process. Every change it makes to a run goes
    through ``coordinator`` (a unit of work sends what the change asks for after commit)."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        coordinator: Coordinator,
        cancel_flags: Callable[[list[Key]], list[bool]],
        worker: str,
        providers: Providers | None = None,
        send_each: Callable[[str, list[tuple[str, int]]], object] | None = None,
    ) -> None:
        """``send_each(run_id, [(task_id, attempt), ...])`` sends attempts a message each (those a
        thread will not run after all); by default through ``coordinator``'s sender."""
        self.settings = settings
        self.db = db
        self.coordinator = coordinator
        self.worker = worker
        self.providers = providers if providers is not None else Providers(settings)
        self.heartbeats = Heartbeats(db, cancel_flags, settings.heartbeat_seconds)
        self._workspaces: dict[str, Path] = {}  # the runs whose workspace this process already created
        self._handoff = threading.local()  # .current: the thread's _HandOff while it works on a message
        self._stopping = False  # the worker is shutting down: no more hand-offs
        self._send_each = send_each or self._send_through_coordinator
        self.releaser = Releaser(settings.batch_release_seconds, self._release)

    def _workspace(self, run_id: str) -> Path:
        """The run's workspace, created on first use by this process (not stat-ed per attempt)."""
        path = self._workspaces.get(run_id)
        if path is None:
            path = self.settings.data_dir / "workspaces" / run_id
            path.mkdir(parents=True, exist_ok=True)
            if len(self._workspaces) > 4096:
                self._workspaces.clear()
            self._workspaces[run_id] = path
        return path

    # -- one attempt ---------------------------------------------------------------------------
    def run_attempt(self, run_id: str, task_id: str, attempt: int) -> str:
        """Claim, run and record one attempt, then the attempts its steps handed to this thread;
        returns what happened, for the Celery result log."""
        return self._handing_off(lambda: self._attempt(run_id, task_id, attempt))

    def run_attempts(self, run_id: str, items: list[tuple[str, int]]) -> str:
        """The attempts of one message of several (``workers.execution.batches``): the first, then
        the others one after the other, each claimed on its own, while the releaser has not sent
        them on because this thread took none of them for ``MISSIONS_BATCH_RELEASE_SECONDS``."""
        if not items:
            return "no attempts"
        (task_id, attempt), rest = items[0], items[1:]
        batch = Batch(run_id, rest, time.monotonic()) if rest else None
        return self._handing_off(lambda: self._attempt(run_id, task_id, attempt), batch)

    def _attempt(self, run_id: str, task_id: str, attempt: int) -> str:
        with (
            log_ids(run_id=run_id, task_id=task_id, attempt=attempt),
            tracing.span(
                "missions.attempt", {**tracing.ids(run_id, None, task_id, attempt), "missions.worker": self.worker}
            ),
        ):
            return self._run_attempt(run_id, task_id, attempt)

    # -- eager hand-off ------------------------------------------------------------------------
    def take(self, run_id: str, task_id: str, attempt: int) -> bool:
        """``Inline.take``: this thread runs the started attempt next, when it works on a delivered
        message (not an inline call of another thread), has nothing taken yet, is within its window
        and its worker is not stopping."""
        handoff: _HandOff | None = getattr(self._handoff, "current", None)
        if handoff is None or handoff.next is not None or self._stopping or time.monotonic() >= handoff.until:
            return False
        handoff.next = (run_id, task_id, attempt)
        return True

    def stop_handing_off(self) -> None:
        """The worker is shutting down: the attempts its steps start go to the broker, and so do
        those of batch messages not started yet, so a warm shutdown waits for the attempts running,
        not for chains or batches of them."""
        self._stopping = True
        self.releaser.release_all()

    def _handing_off(self, work: Callable[[], str], batch: Batch | None = None) -> str:
        """``work()`` (one delivered message's first attempt, or an assessment), then, one after the
        other, the attempt a step handed to this thread (first) and those left in ``batch``. An
        attempt taken but not run (what ran before it raised) is sent after all, as are the batch's
        others; so is one whose run raised (a duplicate of a claimed attempt is a no-op)."""
        if getattr(self._handoff, "current", None) is not None:  # an assessment run inline (never a batch)
            return work()
        handoff = _HandOff(time.monotonic() + self.settings.eager_handoff_seconds)
        self._handoff.current = handoff
        if batch is not None:
            self.releaser.add(batch)
        batched = 0
        try:
            what = work()
            while True:
                if handoff.next is not None:
                    (run_id, task_id, attempt), handoff.next = handoff.next, None
                    handoff.taken += 1
                elif batch is not None and (item := batch.take(time.monotonic())) is not None:
                    run_id, (task_id, attempt) = batch.run_id, item
                    batched += 1
                else:
                    break
                try:
                    self._attempt(run_id, task_id, attempt)
                except BaseException:
                    self._send_each(run_id, [(task_id, attempt)])
                    raise
            metrics.count_handoffs(handoff.taken, batched)
            return what + "".join(
                f"; then {n} attempt(s) {how}"
                for n, how in ((batched, "of its message"), (handoff.taken, "handed off to this thread"))
                if n
            )
        finally:
            self._handoff.current = None
            if handoff.next is not None:
                self._send_each(handoff.next[0], [handoff.next[1:]])
            if batch is not None:
                self.releaser.discard(batch)
                self._release(batch.run_id, batch.release())

    def _release(self, run_id: str, items: list[tuple[str, int]]) -> None:
        """Send the attempts of a batch this thread will not run, a message each (a sender logs its
        failures; the tick re-sends what it could not)."""
        if items:
            metrics.count_handoffs(0, released=len(items))
            self._send_each(run_id, items)

    def _send_through_coordinator(self, run_id: str, items: list[tuple[str, int]]) -> None:
        self.coordinator.sender.send(AfterCommit("", run_id, start=[StartTask(t, a, "", "") for t, a in items]))

    def _run_attempt(self, run_id: str, task_id: str, attempt: int) -> str:
        now = utcnow()
        # The claim is one statement (it commits alone): a second delivery finds the attempt
        # claimed. It is announced to the run (TaskClaimed: "running") later, see _Claim.
        with self.db.autocommit() as conn:
            stored = run_state.peek(conn, run_id)  # the task, team and budget of a started attempt are fixed
            if stored is not None and task_id not in stored.state.tasks:  # cached before the task was added
                stored = run_state.load(conn, run_id, lock=False)
            if stored is None:
                return "run deleted"
            claimed = attempts.claim(conn, run_id, task_id, attempt, self.worker, now)
            if claimed is None:
                return "not claimed: a duplicate delivery, or the attempt was cancelled"
            metrics.observe("queue_wait", max(0.0, (now - claimed["created_at"]).total_seconds()))
            state = stored.state
            task = state.task_spec(task_id)
            agent = self._agent(state, claimed["agent"] or task.assign_to)
            model = claimed["model"] or agent.model
            prompt = claimed["prompt"]  # built by the step that created the attempt
            if prompt is None:  # an attempt queued by a version that built prompts here
                current = run_state.load(conn, run_id, lock=False) or stored  # with the latest feedback
                prompt = prompts(current.state, [task_id])[task_id]
                attempts.store_prompt(conn, run_id, task_id, attempt, prompt)
        claim = _Claim(TaskClaimed(task_id, attempt, self.worker), now, trace=tracing.capture())
        tracing.annotate(
            {"missions.mission_id": state.mission_id, "missions.agent": agent.name, "missions.model": model}
        )
        system = "\n\n".join(p for p in (agent.role, str(agent.config.get("systemPrompt") or "")) if p)
        workspace = self._workspace(run_id)
        call = AgentCall(run_id, task_id, task.title, attempt, agent, model, system, prompt, workspace)
        runtime = runtime_for(model, self.providers)

        def send(text: str) -> None:
            self._emit(run_id, claim, text)

        with self.heartbeats.watch(
            run_id,
            task_id,
            attempt,
            AttemptStatus.RUNNING,
            after=(ANNOUNCE_AFTER, lambda: self._announce(run_id, claim)),
        ) as beat:
            batcher = OutputBatcher(send) if getattr(runtime, "batch_output", False) else None
            emit: Emit = batcher.add if batcher is not None else send
            try:
                with tracing.span("missions.agent", {"missions.agent": agent.name, "missions.model": model}):
                    result = runtime.run(call, beat.cancelled, emit)
            except Exception as exc:  # a broken runtime fails the attempt, it does not kill the worker
                log.exception("agent runtime crashed on %s/%s", run_id, task_id)
                result = AgentResult(error=f"agent runtime error: {exc.__class__.__name__}: {exc}")
            finally:
                if batcher is not None:
                    batcher.close()
        if result.cancelled or beat.cancelled.is_set():
            if result.tokens_in or result.tokens_out or result.outcomes:
                with self.db.transaction() as conn:
                    attempts.record_cancelled_usage(
                        conn,
                        run_id,
                        task_id,
                        attempt,
                        tokens_in=result.tokens_in,
                        tokens_out=result.tokens_out,
                        cost=result.cost_usd,
                        outcomes=result.outcomes,
                    )
                metrics.count_usage(model, result.tokens_in, result.tokens_out, result.cost_usd)
            return "cancelled"
        if result.error is None:
            missing = missing_outcomes(task.expected_outcomes, result.output or "", workspace)
            if missing:
                result = replace(result, error="; ".join(missing), error_code=ErrorCode.OUTCOME_MISSING)
        return self._record(run_id, claim, result, state.spec.budget, assessed=bool(task.expectations), model=model)

    def _agent(self, state: RunState, name: str) -> AgentSpec:
        agents = state.spec.agents_by_name()
        if name in agents:
            return agents[name]
        raise KeyError(f"agent {name!r} is not in the run's team")

    def _announce(self, run_id: str, claim: _Claim) -> None:
        """Tell the run that the attempt is running (the watcher calls this when the agent takes
        longer than ``ANNOUNCE_AFTER``; outputs and the result announce it themselves)."""
        with tracing.restored(claim.trace), self.coordinator.steps() as uow, claim.lock:
            if claim.announced:
                return
            uow.advance(run_id, claim.event, claim.at)
            claim.announced = True

    def _emit(self, run_id: str, claim: _Claim, chunk: str) -> None:
        event = TaskOutputProduced(claim.event.task_id, claim.event.attempt, chunk)
        with self.coordinator.steps() as uow, claim.lock:
            uow.advance(run_id, event, utcnow(), before=claim.pending())
            claim.announced = True

    def _record(
        self,
        run_id: str,
        claim: _Claim,
        result: AgentResult,
        budget: Mapping[str, Any] | None = None,
        *,
        assessed: bool = True,
        model: str | None = None,
    ) -> str:
        """Record the agent's result and feed it to the run (with the claim, when it was not
        announced yet). A successful attempt is ``assessing`` when its task has expectations (the
        engine asks for the judge then), else ``completed``."""
        task_id, attempt = claim.event.task_id, claim.event.attempt
        result = replace(result, output=_text(result.output), error=_text(result.error))
        now = utcnow()
        failed = result.error is not None
        recorded = attempts.record_result(
            run_id,
            task_id,
            attempt,
            now=now,
            status=attempt_status_after_result(failed=failed, assessed=assessed),
            output=result.output,
            error=result.error,
            tokens_in=result.tokens_in,
            tokens_out=result.tokens_out,
            cost=result.cost_usd,
            outcomes=result.outcomes,
        )
        event = (
            TaskFailed(task_id, attempt, result.error or "", result.error_code)
            if failed
            else TaskFinished(task_id, attempt, result.output or "")
        )

        def record(tried: _Tried) -> str:
            # What the step asks for is sent when the block ends, after the claim's lock is released.
            with self.coordinator.steps() as uow, claim.lock:
                outcome = uow.advance(
                    run_id, event, now, before=claim.pending(), guard=recorded, budget=budget, inline=self
                )
                tried.committed = True
                if outcome is None:
                    return "run deleted"
                if outcome.guard is None:
                    if tried.retried:
                        return "result recorded by an earlier try, or dropped: the attempt changed meanwhile"
                    return "result dropped: the attempt was cancelled or lost meanwhile"
                claim.announced = True  # (read only by this thread from here on)
            if model:
                metrics.count_usage(model, result.tokens_in, result.tokens_out, result.cost_usd)
            metrics.observe("task_duration", max(0.0, (now - claim.at).total_seconds()))
            return "failed" if failed else "finished"

        return self._durably("the result", (run_id, task_id, attempt), AttemptStatus.RUNNING, record)

    # -- assessment ----------------------------------------------------------------------------
    def assess(self, run_id: str, task_id: str, attempt: int) -> str:
        """Score an attempt's output against its task's expectations and feed the verdict back (as
        ``Inline.assess``, in the thread of the step that asked; as a message's work, with hand-off)."""
        return self._handing_off(lambda: self._traced_assess(run_id, task_id, attempt))

    def _traced_assess(self, run_id: str, task_id: str, attempt: int) -> str:
        with (
            log_ids(run_id=run_id, task_id=task_id, attempt=attempt),
            tracing.span("missions.assessment", tracing.ids(run_id, None, task_id, attempt)),
        ):
            return self._assess(run_id, task_id, attempt)

    def _assess(self, run_id: str, task_id: str, attempt: int) -> str:
        with self.db.transaction() as conn:
            row = attempts.to_assess(conn, run_id, task_id, attempt)
            if row is not None and row["run_status"] in TERMINAL_RUN_STATUSES:
                attempts.drop_assessment(conn, run_id, task_id, attempt, utcnow())
                return "not assessed: the run is over"
            stored = run_state.load(conn, run_id, lock=False) if row is not None else None
        if row is None or stored is None:
            return "nothing to assess"
        state = stored.state
        tracing.annotate({"missions.mission_id": state.mission_id})
        task = state.task_spec(task_id)
        output = row["output"] or ""
        settings = self.settings
        ctx = AssessmentContext(
            allow_commands=settings.allow_commands,
            workspace=self._workspace(run_id),
            command_timeout=settings.command_timeout_seconds,
            pattern_timeout=settings.pattern_timeout_seconds,
        )
        criteria = [e.criterion or "" for e in task.expectations if e.type == "criterion"]
        verdict: Judgement | None = None
        model: str | None = None
        with self.heartbeats.watch(run_id, task_id, attempt, AttemptStatus.ASSESSING) as beat:
            try:
                if criteria:
                    model, config = self._judge_of(state, row["agent"], row["model"])
                    verdict = judge(
                        JudgeRequest(
                            model=model,
                            config=config,
                            criteria=criteria,
                            output=output,
                            number=int(row["assessed"]) + 1,
                            task_title=task.title,
                            description=task.description,
                        ),
                        self.providers,
                        beat.cancelled,
                    )
                result = score_expectations(task.expectations, output, verdict, ctx)
            except Exception as exc:  # nothing a judge or a check does may kill the worker
                log.exception("assessment of %s/%s crashed", run_id, task_id)
                result = Judgement(None, error=f"assessment error: {exc.__class__.__name__}: {exc}")
        used = verdict or Judgement(None)
        now = utcnow()
        passed = assessment_passes(result.score, result.error, state.spec.quality_threshold)
        recorded = attempts.record_score(
            run_id,
            task_id,
            attempt,
            now=now,
            status=attempt_status_after_assessment(passed),
            score=result.score,
            assessment={
                "score": result.score,
                "criteria": list(result.criteria),
                "error": result.error,
                "judge": model,
            },
            judge_model=model,
            judge_tokens_in=used.tokens_in,
            judge_tokens_out=used.tokens_out,
            judge_cost=used.cost_usd,
        )
        scored = AssessmentScored(
            task_id,
            attempt,
            result.score,
            tuple(result.criteria),
            result.error,
            result.error_code if result.error is not None else None,
        )

        def record(tried: _Tried) -> str:
            with self.coordinator.steps() as uow:
                outcome = uow.advance(run_id, scored, now, guard=recorded, budget=state.spec.budget, inline=self)
                tried.committed = True
            if outcome is not None and outcome.guard is None:
                if tried.retried:
                    return "assessment recorded by an earlier try, or dropped: the attempt changed meanwhile"
                return "assessment dropped: the attempt changed meanwhile"
            if model:
                metrics.count_usage(model, used.tokens_in, used.tokens_out, used.cost_usd)
            if result.score is not None:
                metrics.observe("assessment_score", result.score)
            return "passed" if passed else "failed"

        return self._durably("the assessment", (run_id, task_id, attempt), AttemptStatus.ASSESSING, record)

    def _durably(self, what: str, key: Key, status: AttemptStatus, record: Callable[[_Tried], T]) -> T:
        """``record(tried)``, tried again while the database fails transiently, so that a finished
        result (or verdict) is never dropped on a database blip while this worker lives.

        A try whose step fails with a transient error (``workers.store.db.is_transient``: Postgres
        restarting, a broken pooled connection, no connection in time) is made again after
        ``RETRY_FIRST_SECONDS``, doubling up to ``RETRY_MAX_SECONDS``, for up to ``RETRY_WINDOWS``
        worker-lost windows (``settings.worker_lost_seconds``: a minute by default). From the first
        failure on, the attempt is heart-beaten in ``status`` (the agent's watch has just ended, so
        the first try needs none), so the reaper does not take it for lost and run it (and pay for
        it) again. Trying again after a commit whose answer
        was lost is harmless: the guard matches nothing the second time.

        ``record`` sets ``tried.committed`` once its step has returned: a failure after that (in
        what the step sends, such as an inline assessment) is no reason to record again, and is
        raised. So is an error that is not transient, and a transient one once the window has
        passed: the attempt is then left to the reaper, as when a worker dies."""
        deadline = time.monotonic() + RETRY_WINDOWS * self.settings.worker_lost_seconds
        delay = RETRY_FIRST_SECONDS
        tried = _Tried()
        with ExitStack() as beating:
            while True:
                tried.committed = False
                try:
                    return record(tried)
                except Exception as exc:
                    left = deadline - time.monotonic()
                    if tried.committed or not is_transient(exc) or left <= 0:
                        raise
                    delay = min(delay, left)  # (the last try is made at the end of the window)
                    log.warning(
                        "recording %s of attempt %s of %s/%s failed (%s: %s); trying again in %.1f s",
                        what,
                        key[2],
                        key[0],
                        key[1],
                        type(exc).__name__,
                        exc,
                        delay,
                    )
                if not tried.retried:  # from the first failure on, the attempt is heart-beaten
                    beating.enter_context(self.heartbeats.watch(*key, status))
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                tried.retried = True

    def _judge_of(
        self, state: RunState, agent_name: str | None, attempt_model: str | None
    ) -> tuple[str, Mapping[str, Any]]:
        """The judge's model and config: the mission's assessor, else MISSIONS_JUDGE_MODEL, else the
        attempt's own model (with its agent's endpoint when the provider is the agent's)."""
        assessor = dict(state.spec.assessor or {})
        if assessor.get("model"):
            return str(assessor["model"]), assessor
        if self.settings.judge_model:
            return self.settings.judge_model, {}
        agents = state.spec.agents_by_name()
        agent = agents.get(agent_name or "")
        model = attempt_model or (agent.model if agent is not None else "")
        if agent is None:
            return model, {}
        if model.startswith("scripted/"):
            return model, agent.config  # a scripted agent's script may carry the judge's steps
        return model, endpoint_config(model, agent.model, agent.config)
