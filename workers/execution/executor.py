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
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

from orchestrator.engine import (
    AssessmentScored,
    BudgetExceeded,
    Event,
    RunState,
    TaskClaimed,
    TaskFailed,
    TaskFinished,
    TaskOutputProduced,
)
from orchestrator.spec import AgentSpec
from workers.coordination import step as coordinator
from workers.store import run_state as run_store
from workers.execution.agents import AgentCall, AgentResult, Emit, runtime_for
from workers.execution.assessment import (
    AssessmentContext,
    Judgement,
    JudgeRequest,
    judge,
    missing_outcomes,
    score_expectations,
)
from workers.coordination.step import TERMINAL, AfterCommit
from workers.messaging.dispatch import Dispatcher
from workers.execution.heartbeat import Heartbeats
from workers.execution.providers import Providers, endpoint_config
from workers.support.logs import log_ids
from workers.wiring import Services
from workers.store.usage import budget_exceeded, run_totals

log = logging.getLogger(__name__)

ANNOUNCE_AFTER = 0.2  # seconds an agent may run before its claim is announced on its own (see _Claim)
OUTPUT_INTERVAL = 0.1  # seconds between two task:output events of one attempt (at most ~10 a second)

# A statement that finds one attempt by its key names the status the attempt must have as a
# parameter (``was``), never as a literal: with ``status = 'queued'`` written out, a plan Postgres
# caches while the table is small may read the partial index of all queued attempts instead of the
# primary key, and keep doing so as the queue grows (tests/integration/test_query_plans.py).
_CLAIM = """
UPDATE attempts SET status = 'running', worker = %(worker)s, claimed_at = %(now)s, heartbeat_at = %(now)s
 WHERE run_id = %(run_id)s AND task_id = %(task_id)s AND attempt = %(attempt)s AND status = %(was)s
RETURNING agent, model, prompt
"""

_STORE_PROMPT = """
UPDATE attempts SET prompt = %(prompt)s WHERE run_id = %(run_id)s AND task_id = %(task_id)s AND attempt = %(attempt)s
"""

_RECORD = """
UPDATE attempts SET status = %(status)s, output = %(output)s, error = %(error)s, finished_at = %(now)s,
       heartbeat_at = %(now)s, tokens_in = %(tokens_in)s, tokens_out = %(tokens_out)s, cost_usd = %(cost)s,
       outcomes = %(outcomes)s
 WHERE run_id = %(run_id)s AND task_id = %(task_id)s AND attempt = %(attempt)s AND status = %(was)s
RETURNING 1
"""

_RECORD_SCORE = """
UPDATE attempts SET status = %(status)s, score = %(score)s, assessment = %(assessment)s, heartbeat_at = %(now)s,
       judge_model = %(judge_model)s, judge_tokens_in = %(judge_tokens_in)s,
       judge_tokens_out = %(judge_tokens_out)s, judge_cost_usd = %(judge_cost)s
 WHERE run_id = %(run_id)s AND task_id = %(task_id)s AND attempt = %(attempt)s AND status = %(was)s
RETURNING 1
"""

# The run ended (abort, deadline, budget) while this attempt waited for its judge: do not judge it.
_DROP_ASSESSMENT = """
UPDATE attempts SET status = 'cancelled', error = coalesce(error, 'the run ended before the assessment'),
       heartbeat_at = %(now)s
 WHERE run_id = %(run_id)s AND task_id = %(task_id)s AND attempt = %(attempt)s AND status = %(was)s
"""

# What a cancelled attempt had already spent (turns that finished before the cancel) still counts.
_RECORD_CANCELLED_USAGE = """
UPDATE attempts SET tokens_in = %(tokens_in)s, tokens_out = %(tokens_out)s, cost_usd = %(cost)s,
       outcomes = %(outcomes)s
 WHERE run_id = %(run_id)s AND task_id = %(task_id)s AND attempt = %(attempt)s
"""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


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
    return coordinator.no_nul(text) if text else text


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

    def pending(self) -> tuple[tuple[Event, datetime], ...]:
        return () if self.announced else ((self.event, self.at),)


class Executor:
    """Runs attempts and assessments for one worker process."""

    def __init__(self, services: Services, dispatcher: Dispatcher, worker: str,
                 providers: Providers | None = None) -> None:
        self.services = services
        self.dispatcher = dispatcher
        self.worker = worker
        self.providers = providers if providers is not None else Providers(services.settings)
        self.heartbeats = Heartbeats(services, services.settings.heartbeat_seconds)
        self._workspaces: dict[str, Path] = {}  # the runs whose workspace this process already created

    def _workspace(self, run_id: str) -> Path:
        """The run's workspace, created on first use by this process (not stat-ed per attempt)."""
        path = self._workspaces.get(run_id)
        if path is None:
            path = self.services.settings.data_dir / "workspaces" / run_id
            path.mkdir(parents=True, exist_ok=True)
            if len(self._workspaces) > 4096:
                self._workspaces.clear()
            self._workspaces[run_id] = path
        return path

    # -- one attempt ---------------------------------------------------------------------------
    def run_attempt(self, run_id: str, task_id: str, attempt: int) -> str:
        """Claim, run and record one attempt; returns what happened, for the Celery result log."""
        with log_ids(run_id=run_id, task_id=task_id, attempt=attempt):
            return self._run_attempt(run_id, task_id, attempt)

    def _run_attempt(self, run_id: str, task_id: str, attempt: int) -> str:
        now = utcnow()
        params = {"run_id": run_id, "task_id": task_id, "attempt": attempt, "worker": self.worker, "now": now,
                  "was": "queued"}
        # The claim is one statement (it commits alone): a second delivery finds the attempt
        # claimed. It is announced to the run (TaskClaimed: "running") later, see _Claim.
        with self.services.autocommit() as conn:
            stored = run_store.peek(conn, run_id)  # the task, team and budget of a started attempt are fixed
            if stored is not None and task_id not in stored.state.tasks:  # cached before the task was added
                stored = run_store.load(conn, run_id, lock=False)
            if stored is None:
                return "run deleted"
            claimed = conn.execute(_CLAIM, params).fetchone()
            if claimed is None:
                return "not claimed: a duplicate delivery, or the attempt was cancelled"
            state = stored.state
            task = state.task_spec(task_id)
            agent = self._agent(state, claimed["agent"] or task.assign_to)
            model = claimed["model"] or agent.model
            prompt = claimed["prompt"]  # built by the step that created the attempt
            if prompt is None:  # an attempt queued by a version that built prompts here
                current = run_store.load(conn, run_id, lock=False) or stored  # with the latest feedback
                prompt = coordinator.prompts(current.state, [task_id])[task_id]
                conn.execute(_STORE_PROMPT, {**params, "prompt": prompt})
        claim = _Claim(TaskClaimed(task_id, attempt, self.worker), now)
        system = "\n\n".join(p for p in (agent.role, str(agent.config.get("systemPrompt") or "")) if p)
        workspace = self._workspace(run_id)
        call = AgentCall(run_id, task_id, task.title, attempt, agent, model, system, prompt, workspace)
        runtime = runtime_for(model, self.providers)

        def send(text: str) -> None:
            self._emit(run_id, claim, text)

        with self.heartbeats.watch(run_id, task_id, attempt, "running",
                                   after=(ANNOUNCE_AFTER, lambda: self._announce(run_id, claim))) as beat:
            batcher = OutputBatcher(send) if getattr(runtime, "batch_output", False) else None
            emit: Emit = batcher.add if batcher is not None else send
            try:
                result = runtime.run(call, beat.cancelled, emit)
            except Exception as exc:  # a broken runtime fails the attempt, it does not kill the worker
                log.exception("agent runtime crashed on %s/%s", run_id, task_id)
                result = AgentResult(error=f"agent runtime error: {exc.__class__.__name__}: {exc}")
            finally:
                if batcher is not None:
                    batcher.close()
        if result.cancelled or beat.cancelled.is_set():
            if result.tokens_in or result.tokens_out or result.outcomes:
                with self.services.transaction() as conn:
                    conn.execute(_RECORD_CANCELLED_USAGE, self._usage_params(run_id, task_id, attempt, result))
            return "cancelled"
        if result.error is None:
            missing = missing_outcomes(task.expected_outcomes, result.output or "", workspace)
            if missing:
                result = replace(result, error="; ".join(missing))
        return self._record(run_id, claim, result, state.spec.budget, assessed=bool(task.expectations))

    def _agent(self, state: RunState, name: str) -> AgentSpec:
        agents = state.spec.agents_by_name()
        if name in agents:
            return agents[name]
        raise KeyError(f"agent {name!r} is not in the run's team")

    def _announce(self, run_id: str, claim: _Claim) -> None:
        """Tell the run that the attempt is running (the watcher calls this when the agent takes
        longer than ``ANNOUNCE_AFTER``; outputs and the result announce it themselves)."""
        with claim.lock:
            if claim.announced:
                return
            outcome = self._step(run_id, claim.event, claim.at)
            claim.announced = True
        self.dispatcher.after_commit(outcome)

    def _emit(self, run_id: str, claim: _Claim, chunk: str) -> None:
        event = TaskOutputProduced(claim.event.task_id, claim.event.attempt, chunk)
        with claim.lock:
            outcome = self._step(run_id, event, utcnow(), before=claim.pending())
            claim.announced = True
        self.dispatcher.after_commit(outcome)

    def _step(self, run_id: str, event: Event, at: datetime, *, before: tuple[tuple[Event, datetime], ...] = (),
              guard: run_store.Guard | None = None, budget: Mapping[str, Any] | None = None
              ) -> AfterCommit | None:
        """Feed ``event`` to the run: in one statement when this process's state of the run is
        current (``coordinator.step_if_current``), else in a transaction that locks the run row
        first, where a ``budget`` is checked against the run's totals too."""
        with self.services.autocommit() as conn:
            outcome = None
            if not budget:
                outcome = coordinator.step_if_current(conn, run_id, event, at, guard, before)
            if outcome is None:
                with conn.transaction():
                    outcome = coordinator.step(conn, run_id, event, at, guard=guard, before=before)
                    if outcome is not None and (guard is None or outcome.guard is not None):
                        outcome = self._enforce_budget(conn, run_id, outcome, at, budget)
            return outcome

    @staticmethod
    def _usage_params(run_id: str, task_id: str, attempt: int, result: AgentResult) -> dict[str, Any]:
        return {"run_id": run_id, "task_id": task_id, "attempt": attempt, "tokens_in": result.tokens_in,
                "tokens_out": result.tokens_out, "cost": result.cost_usd,
                "outcomes": Jsonb([dict(o) for o in result.outcomes])}

    def _record(self, run_id: str, claim: _Claim, result: AgentResult,
                budget: Mapping[str, Any] | None = None, *, assessed: bool = True) -> str:
        """Record the agent's result and feed it to the run (with the claim, when it was not
        announced yet). A successful attempt is ``assessing`` when its task has expectations (the
        engine asks for the judge then), else ``completed``."""
        task_id, attempt = claim.event.task_id, claim.event.attempt
        result = replace(result, output=_text(result.output), error=_text(result.error))
        now = utcnow()
        failed = result.error is not None
        status = "failed" if failed else ("assessing" if assessed else "completed")
        params = {**self._usage_params(run_id, task_id, attempt, result), "now": now,
                  "status": status, "output": result.output, "error": result.error, "was": "running"}
        event = (TaskFailed(task_id, attempt, result.error or "") if failed
                 else TaskFinished(task_id, attempt, result.output or ""))
        with claim.lock:
            outcome = self._step(run_id, event, now, before=claim.pending(), guard=run_store.Guard(_RECORD, params),
                                 budget=budget)
            if outcome is None:
                return "run deleted"
            if outcome.guard is None:
                return "result dropped: the attempt was cancelled or lost meanwhile"
            claim.announced = True  # (read only by this thread from here on)
        self.dispatcher.after_commit(outcome, assess_inline=self.assess)
        return "failed" if failed else "finished"

    def _enforce_budget(self, conn: Any, run_id: str, outcome: AfterCommit | None, now: datetime,
                        budget: Mapping[str, Any] | None) -> AfterCommit | None:
        """Stop a live run whose recorded usage is over its mission's budget (same transaction)."""
        if outcome is None or outcome.status in TERMINAL or not budget:
            return outcome
        why = budget_exceeded(budget, run_totals(conn, run_id))
        if why is None:
            return outcome
        log.warning("run %s is over its budget and stops: %s", run_id, why)
        stopped = coordinator.step(conn, run_id, BudgetExceeded(), now)
        outcome.start.clear()  # the attempts this step started were cancelled by the stop
        return outcome.merge(stopped)

    # -- assessment ----------------------------------------------------------------------------
    def assess(self, run_id: str, task_id: str, attempt: int) -> str:
        """Score an attempt's output against its task's expectations and feed the verdict back."""
        with log_ids(run_id=run_id, task_id=task_id, attempt=attempt):
            return self._assess(run_id, task_id, attempt)

    def _assess(self, run_id: str, task_id: str, attempt: int) -> str:
        with self.services.transaction() as conn:
            row = conn.execute(
                "SELECT a.output, a.agent, a.model, r.status AS run_status,"
                " (SELECT count(*) FROM attempts p WHERE p.run_id = a.run_id AND p.task_id = a.task_id"
                "   AND p.assessment IS NOT NULL) AS assessed"
                " FROM attempts a JOIN runs r ON r.id = a.run_id"
                " WHERE a.run_id = %s AND a.task_id = %s AND a.attempt = %s AND a.status = 'assessing'",
                (run_id, task_id, attempt),
            ).fetchone()
            if row is not None and row["run_status"] in TERMINAL:
                conn.execute(_DROP_ASSESSMENT, {"run_id": run_id, "task_id": task_id, "attempt": attempt,
                                                "now": utcnow(), "was": "assessing"})
                return "not assessed: the run is over"
            stored = run_store.load(conn, run_id, lock=False) if row is not None else None
        if row is None or stored is None:
            return "nothing to assess"
        state = stored.state
        task = state.task_spec(task_id)
        output = row["output"] or ""
        settings = self.services.settings
        ctx = AssessmentContext(allow_commands=settings.allow_commands,
                                workspace=self._workspace(run_id),
                                command_timeout=settings.command_timeout_seconds)
        criteria = [e.criterion or "" for e in task.expectations if e.type == "criterion"]
        verdict: Judgement | None = None
        model: str | None = None
        with self.heartbeats.watch(run_id, task_id, attempt, "assessing") as beat:
            try:
                if criteria:
                    model, config = self._judge_of(state, row["agent"], row["model"])
                    verdict = judge(JudgeRequest(model=model, config=config, criteria=criteria, output=output,
                                                 number=int(row["assessed"]) + 1, task_title=task.title,
                                                 description=task.description), self.providers, beat.cancelled)
                result = score_expectations(task.expectations, output, verdict, ctx)
            except Exception as exc:  # nothing a judge or a check does may kill the worker
                log.exception("assessment of %s/%s crashed", run_id, task_id)
                result = Judgement(None, error=f"assessment error: {exc.__class__.__name__}: {exc}")
        used = verdict or Judgement(None)
        now = utcnow()
        passed = result.error is None and result.score is not None and result.score >= state.spec.quality_threshold
        recorded = run_store.Guard(_RECORD_SCORE, {
            "run_id": run_id, "task_id": task_id, "attempt": attempt, "now": now, "was": "assessing",
            "status": "completed" if passed else "failed", "score": result.score,
            "assessment": Jsonb({"score": result.score, "criteria": list(result.criteria), "error": result.error,
                                 "judge": model}),
            "judge_model": model, "judge_tokens_in": used.tokens_in, "judge_tokens_out": used.tokens_out,
            "judge_cost": used.cost_usd,
        })
        scored = AssessmentScored(task_id, attempt, result.score, tuple(result.criteria), result.error)
        outcome = self._step(run_id, scored, now, guard=recorded, budget=state.spec.budget)
        if outcome is not None and outcome.guard is None:
            return "assessment dropped: the attempt changed meanwhile"
        self.dispatcher.after_commit(outcome, assess_inline=self.assess)
        return "passed" if passed else "failed"

    def _judge_of(self, state: RunState, agent_name: str | None, attempt_model: str | None
                  ) -> tuple[str, Mapping[str, Any]]:
        """The judge's model and config: the mission's assessor, else MISSIONS_JUDGE_MODEL, else the
        attempt's own model (with its agent's endpoint when the provider is the agent's)."""
        assessor = dict(state.spec.assessor or {})
        if assessor.get("model"):
            return str(assessor["model"]), assessor
        if self.services.settings.judge_model:
            return self.services.settings.judge_model, {}
        agents = state.spec.agents_by_name()
        agent = agents.get(agent_name or "")
        model = attempt_model or (agent.model if agent is not None else "")
        if agent is None:
            return model, {}
        if model.startswith("scripted/"):
            return model, agent.config  # a scripted agent's script may carry the judge's steps
        return model, endpoint_config(model, agent.model, agent.config)
