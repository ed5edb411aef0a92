"""The execution state machine of one mission run: ``decide(state, event, now) -> Decision``.

Theory of operation
-------------------
A run is a ``RunState``: the mission spec it was started with, the mission status, one
``TaskState`` per task (keyed by task id), and the progress of its quality gates and checkpoints.
The shell never changes a ``RunState`` itself. Everything it observes comes back as an *event*
(past tense: ``TaskClaimed``, ``TaskFinished``, ``AssessmentScored``, ``RetryDue``,
``ResumeRequested``, ...), and ``decide`` answers with a ``Decision``: the next state and the
*effects* (imperative: ``StartTask``, ``AssessTask``, ``CancelTask``, ``ScheduleTimer``,
``CancelTimer``, ``PublishEvent``) that the shell carries out after it has committed that state.

Every decision is made in the same order:

1. the event's own rule (a task was claimed, finished, failed, was scored, ...), then
2. ``_settle``: tasks that can no longer run are skipped, gates whose afterTasks are all terminal
   are judged, checkpoints whose afterTasks all completed pause the run, ready tasks start
   (highest priority first, within concurrency limits), and a run with nothing left to do ends.

A task's life: ``pending`` → ``queued`` (``StartTask``; attempt + 1) → ``running`` (claimed by a
worker) → ``assessing`` (only with expectations; ``AssessTask``) → ``completed``. A failed attempt
(error, timeout, or a score below the quality threshold) goes back to ``pending`` while its
retry budget lasts, after the policy's backoff, and otherwise ends ``failed``; everything
downstream of a failed task is ``skipped``. Every failure carries an ``ErrorCode``
(``orchestrator.failures``): one no retry can fix (a missing key, rejected credentials, an unknown
model, an invalid request) spends no retry on the same agent and model (``after_failure``), and
each failed attempt is also published as an ``error`` event, as is a run stopped by its deadline
or budget. A worker lost mid-run re-runs the attempt without
counting it as a failure, unless the task has side effects: then it waits in
``awaiting_approval`` and the run pauses for a human.

The shell records each attempt as a row of its own, and stores timers; the words for both are in
``orchestrator.vocabulary`` (re-exported here), and the shell must use them rather than spell the
strings or re-derive the rules: an attempt row's status after the agent's result is
``attempt_status_after_result`` (the rule ``TaskFinished`` moves the task by), after its verdict
``attempt_status_after_assessment(assessment_passes(...))`` (the rule ``AssessmentScored``
completes the task by); a ``ScheduleTimer`` is stored under its ``kind`` and ``key`` (a
``Timer``'s), and a fired row comes back as an event through ``timer_event(kind, key)``.

Retry budget (``max_attempts``, ``assignment``): ``1 + maxRetries`` attempts by ``assignTo``
with its team model. A ``retryPolicy`` with ``fallbackAgent`` and/or ``escalateModel`` escalates
the attempts after ``escalateAfter`` failures inside that budget, or, without ``escalateAfter``,
adds one final escalated attempt. Only failures count: a lost worker does not.

Pauses: a blocked quality gate, a reached checkpoint, or a lost side-effecting attempt pause the
run. Attempts already under way go on and their events still apply; nothing new starts. One
resume settles every cause at once: checkpoints are approved; a blocked gate is overridden, or
with ``retryFailed`` re-judged after its failed and low-scoring afterTasks re-run with a fresh
budget (as does every other failed task, and what was skipped because of them); a task awaiting
approval runs again with ``retryFailed`` and fails otherwise.

Guarantees:

* Pure: no I/O, clock, randomness or environment. ``now`` is an argument, so the same state,
  event and time always give an equal decision.
* Late and duplicate events are expected (at-least-once delivery, reapers, retried requests).
  Every task event names its attempt; an event for another attempt, a task in a status the event
  cannot apply to, an unknown task or a finished run changes nothing and says why in
  ``Decision.ignored``. Exceptions are raised only for broken invariants (a naive ``now``, a spec
  without task ids or with dangling references or cycles).
* A run never stalls while ``active``: when nothing is queued, running, being assessed, waiting
  for a backoff timer or for capacity, it is either paused (waiting for a human) or finished.
* A decision costs roughly what it changes, so a mission of thousands of tasks stays cheap per
  step: the spec's derived indexes (ids, dependents, topological order) and a running tally
  (the frontier of pending tasks whose dependencies completed, in start order; counts by status
  and by busy agent) are carried from state to state outside equality and serialisation, and
  rebuilt from scratch whenever they do not belong to the state's own spec and tasks. Beyond
  copying the task mapping, only a task becoming failed, skipped or cancelled, a resume, an
  abort, or a change of tasks walks every task.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final, Protocol, TypeAlias, TypeVar, assert_never

from orchestrator.failures import ErrorCode, after_failure, error_code
from orchestrator.spec import (
    DEFAULT_ON_TIMEOUT,
    AgentSpec,
    GateSpec,
    MissionSpec,
    TaskSpec,
    format_timestamp,
    parse_timestamp,
)

# The vocabulary the shell shares with the core, re-exported (``X as X``) so the shell imports
# everything from this module.
from orchestrator.vocabulary import DEADLINE_KEY as DEADLINE_KEY
from orchestrator.vocabulary import LIVE_ATTEMPT_STATUSES as LIVE_ATTEMPT_STATUSES
from orchestrator.vocabulary import LIVE_RUN_STATUSES as LIVE_RUN_STATUSES
from orchestrator.vocabulary import RUNNING_MISSION_STATUSES as RUNNING_MISSION_STATUSES
from orchestrator.vocabulary import TERMINAL_ATTEMPT_STATUSES as TERMINAL_ATTEMPT_STATUSES
from orchestrator.vocabulary import TERMINAL_RUN_STATUSES as TERMINAL_RUN_STATUSES
from orchestrator.vocabulary import TERMINAL_TASK_STATUSES as TERMINAL_TASK_STATUSES
from orchestrator.vocabulary import AttemptStatus as AttemptStatus
from orchestrator.vocabulary import CheckpointStatus as CheckpointStatus
from orchestrator.vocabulary import DelayStatus as DelayStatus
from orchestrator.vocabulary import GateStatus as GateStatus
from orchestrator.vocabulary import MissionStatus as MissionStatus
from orchestrator.vocabulary import PauseReason as PauseReason
from orchestrator.vocabulary import ReviewDecision as ReviewDecision
from orchestrator.vocabulary import TaskStatus as TaskStatus
from orchestrator.vocabulary import Timer as Timer
from orchestrator.vocabulary import TimerKind as TimerKind
from orchestrator.vocabulary import assessment_passes as assessment_passes
from orchestrator.vocabulary import attempt_key as attempt_key
from orchestrator.vocabulary import attempt_status_after_assessment as attempt_status_after_assessment
from orchestrator.vocabulary import attempt_status_after_result as attempt_status_after_result

# --------------------------------------------------------------------------------------------
# Groups of task statuses the rules use

# A dependency in one of these can never complete any more.
_DEAD: Final = frozenset({TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.CANCELLED})
# An agent (or the judge) is working on the task's current attempt.
_IN_FLIGHT: Final = frozenset({TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.ASSESSING})
# Counted against agent and mission concurrency limits.
_OCCUPYING: Final = frozenset({TaskStatus.QUEUED, TaskStatus.RUNNING})
# While any task is in one of these, the run is not over.
_UNFINISHED: Final = frozenset(
    {
        TaskStatus.PENDING,
        TaskStatus.QUEUED,
        TaskStatus.RUNNING,
        TaskStatus.ASSESSING,
        TaskStatus.AWAITING_APPROVAL,
    }
)

FAILURE_TASK_FAILED: Final = "task_failed"
FAILURE_DEADLINE: Final = "deadline_exceeded"
FAILURE_ABORTED: Final = "aborted"
FAILURE_BUDGET: Final = "budget_exceeded"
FAILURE_TASK_CANCELLED: Final = "task_cancelled"
FAILURE_REJECTED: Final = "rejected"
# The end reasons of a failed run that an operator may continue (``resume`` with ``retryFailed``,
# or the retry of one task): its tasks failed or were cancelled one by one, so running them again
# can still complete the run. An aborted run (cancelled), a deadline that passed, a budget that is
# spent (and a review that rejected the work) are decisions about the whole run: a new run is
# the way on.
CONTINUABLE_FAILURES: Final = frozenset({FAILURE_TASK_FAILED, FAILURE_TASK_CANCELLED})
CANCELLED_BY_OPERATOR: Final = "cancelled by an operator"
UNKNOWN_OUTCOME_ERROR: Final = "outcome unknown after worker loss; not re-run"


# --------------------------------------------------------------------------------------------
# State


@dataclass(frozen=True)
class TaskState:
    task_id: str
    title: str
    status: TaskStatus
    attempt: int = 0  # number of the latest attempt; 0 = never started
    failed_attempts: int = 0  # failures that count against the retry policy
    agent: str | None = None  # agent of the latest attempt
    model: str | None = None  # model of the latest attempt ("" = the shell resolves it)
    score: float | None = None  # score of the latest attempt, if it was assessed
    output: str | None = None  # latest output
    error: str | None = None  # why the latest attempt failed, or why the task was skipped
    feedback: tuple[str, ...] = ()  # failures and judge reasons of earlier attempts
    retry_at: datetime | None = None  # a pending retry may not start before this
    started_at: datetime | None = None  # the latest attempt was claimed by a worker
    finished_at: datetime | None = None  # the task reached a terminal status
    worker: str | None = None  # worker that claimed the latest attempt
    criteria: tuple[Mapping[str, Any], ...] = ()  # per-expectation results of the latest assessment
    review: tuple[str, ...] = ()  # changes reviewers asked for; the next attempt's prompt carries them

    def to_json(self) -> dict[str, Any]:
        return {
            "taskId": self.task_id,
            "title": self.title,
            "status": self.status.value,
            "attempt": self.attempt,
            "failedAttempts": self.failed_attempts,
            "agent": self.agent,
            "model": self.model,
            "score": self.score,
            "output": self.output,
            "error": self.error,
            "feedback": list(self.feedback),
            "retryAt": _format_time(self.retry_at),
            "startedAt": _format_time(self.started_at),
            "finishedAt": _format_time(self.finished_at),
            "worker": self.worker,
            "criteria": [dict(c) for c in self.criteria],
            "review": list(self.review),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskState:
        return cls(
            task_id=data["taskId"],
            title=data["title"],
            status=TaskStatus(data["status"]),
            attempt=int(data.get("attempt", 0)),
            failed_attempts=int(data.get("failedAttempts", 0)),
            agent=data.get("agent"),
            model=data.get("model"),
            score=data.get("score"),
            output=data.get("output"),
            error=data.get("error"),
            feedback=tuple(data.get("feedback") or ()),
            retry_at=_parse_time(data.get("retryAt")),
            started_at=_parse_time(data.get("startedAt")),
            finished_at=_parse_time(data.get("finishedAt")),
            worker=data.get("worker"),
            criteria=tuple(dict(c) for c in data.get("criteria") or ()),
            review=tuple(data.get("review") or ()),
        )


@dataclass(frozen=True, eq=False)
class _SpecIndex:
    """What the rules need to look up quickly, derived once from one spec object."""

    spec: MissionSpec
    tasks: Mapping[str, TaskSpec]  # by id, in document order
    position: Mapping[str, int]  # document order, for priority ties
    id_by_title: Mapping[str, str]
    dependencies: Mapping[str, tuple[str, ...]]  # ids
    dependents: Mapping[str, tuple[str, ...]]  # ids
    topological: tuple[str, ...]  # dependencies and gate/checkpoint edges first
    gate_after: tuple[tuple[str, ...], ...]
    checkpoint_after: tuple[tuple[str, ...], ...]
    gates_blocking: Mapping[str, tuple[int, ...]]
    checkpoints_blocking: Mapping[str, tuple[int, ...]]
    agents: Mapping[str, AgentSpec]
    delay_after: tuple[tuple[str, ...], ...] = ()
    delays_blocking: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


def _dependencies_completed(tasks: Mapping[str, TaskState], index: _SpecIndex, task_id: str) -> bool:
    return all(tasks[dep].status is TaskStatus.COMPLETED for dep in index.dependencies[task_id])


@dataclass(eq=False)
class _Tally:
    """Running counts over one tasks mapping, so a decision costs what changed, not all tasks.

    Derived data, never compared or serialised: rebuilt whenever it is missing or was made for
    another tasks mapping or spec, then kept current by ``moved`` on every task change.
    """

    tasks: Mapping[str, TaskState]  # the mapping it counts (by identity)
    spec: MissionSpec  # the spec whose dependencies and priorities it follows (by identity)
    # Pending tasks whose dependencies all completed, in start order: (-priority, position, id).
    frontier: list[tuple[int, int, str]]
    by_status: dict[TaskStatus, int]
    occupied_by_agent: dict[str, int]  # queued or running tasks per agent of their attempt

    @classmethod
    def of(cls, tasks: Mapping[str, TaskState], index: _SpecIndex) -> _Tally:
        tally = cls(tasks=tasks, spec=index.spec, frontier=[], by_status={}, occupied_by_agent={})
        for task in tasks.values():
            tally._count(task, 1)
            if task.status is TaskStatus.PENDING and _dependencies_completed(tasks, index, task.task_id):
                tally.frontier.append(_start_order(index, task.task_id))
        tally.frontier.sort()
        return tally

    def copy_for(self, tasks: Mapping[str, TaskState]) -> _Tally:
        return _Tally(tasks, self.spec, list(self.frontier), dict(self.by_status), dict(self.occupied_by_agent))

    def count(self, *statuses: TaskStatus) -> int:
        return sum(self.by_status.get(s, 0) for s in statuses)

    def moved(self, old: TaskState | None, new: TaskState | None, index: _SpecIndex) -> None:
        """Account for ``tasks`` having changed one task from ``old`` to ``new`` (None: absent)."""
        if old is not None:
            self._count(old, -1)
        if new is not None:
            self._count(new, 1)
        current = new if new is not None else old
        if current is None:
            return
        task_id = current.task_id
        if new is not None and new.status is TaskStatus.PENDING and _dependencies_completed(self.tasks, index, task_id):
            self._enter(index, task_id)
        else:
            self._leave(index, task_id)
        was_completed = old is not None and old.status is TaskStatus.COMPLETED
        is_completed = new is not None and new.status is TaskStatus.COMPLETED
        if was_completed == is_completed:
            return
        for dependent in index.dependents.get(task_id, ()):
            if not is_completed:
                self._leave(index, dependent)
            elif self.tasks[dependent].status is TaskStatus.PENDING and _dependencies_completed(
                self.tasks, index, dependent
            ):
                self._enter(index, dependent)

    def _count(self, task: TaskState, delta: int) -> None:
        _bump(self.by_status, task.status, delta)
        if task.status in _OCCUPYING:
            _bump(self.occupied_by_agent, task.agent or "", delta)

    def _enter(self, index: _SpecIndex, task_id: str) -> None:
        key = _start_order(index, task_id)
        at = bisect.bisect_left(self.frontier, key)
        if at == len(self.frontier) or self.frontier[at] != key:
            self.frontier.insert(at, key)

    def _leave(self, index: _SpecIndex, task_id: str) -> None:
        key = _start_order(index, task_id)
        at = bisect.bisect_left(self.frontier, key)
        if at < len(self.frontier) and self.frontier[at] == key:
            del self.frontier[at]

    def same_counts_as(self, other: _Tally) -> bool:
        return (self.frontier, self.by_status, self.occupied_by_agent) == (
            other.frontier,
            other.by_status,
            other.occupied_by_agent,
        )


def _start_order(index: _SpecIndex, task_id: str) -> tuple[int, int, str]:
    """Highest priority first, ties in document order."""
    return (-index.tasks[task_id].priority, index.position[task_id], task_id)


def _bump(counts: dict[Any, int], key: Any, delta: int) -> None:
    value = counts.get(key, 0) + delta
    if value:
        counts[key] = value
    else:
        counts.pop(key, None)


@dataclass(frozen=True)
class DelayState:
    """Where one delay of the spec is: ``until`` is set once it started waiting."""

    status: DelayStatus = DelayStatus.PENDING
    until: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status.value, "until": _format_time(self.until)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DelayState:
        return cls(DelayStatus(data["status"]), _parse_time(data.get("until")))


@dataclass(frozen=True)
class Review:
    """One decision taken at a checkpoint or a side-effect approval, by a person or a timeout."""

    decision: ReviewDecision
    at: datetime
    reviewer_id: str | None = None  # the API key that decided (None: a timeout)
    reviewer_name: str | None = None
    feedback: str | None = None
    redo: tuple[str, ...] = ()  # titles re-run with the feedback
    checkpoints: tuple[str, ...] = ()  # labels of the checkpoints it decided
    tasks: tuple[str, ...] = ()  # titles of the tasks awaiting approval it decided
    timed_out: bool = False

    def to_json(self) -> dict[str, Any]:
        reviewer = None
        if self.reviewer_id is not None or self.reviewer_name is not None:
            reviewer = {"id": self.reviewer_id, "name": self.reviewer_name}
        return {
            "decision": self.decision.value,
            "at": format_timestamp(self.at),
            "reviewer": reviewer,
            "feedback": self.feedback,
            "redo": list(self.redo),
            "checkpoints": list(self.checkpoints),
            "tasks": list(self.tasks),
            "timedOut": self.timed_out,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Review:
        reviewer = data.get("reviewer") or {}
        return cls(
            decision=ReviewDecision(data["decision"]),
            at=parse_timestamp(data["at"]),
            reviewer_id=reviewer.get("id"),
            reviewer_name=reviewer.get("name"),
            feedback=data.get("feedback"),
            redo=tuple(data.get("redo") or ()),
            checkpoints=tuple(data.get("checkpoints") or ()),
            tasks=tuple(data.get("tasks") or ()),
            timed_out=bool(data.get("timedOut", False)),
        )


@dataclass(frozen=True)
class RunState:
    run_id: str
    mission_id: str
    spec: MissionSpec
    status: MissionStatus
    tasks: Mapping[str, TaskState]  # by task id
    pause_reason: PauseReason | None = None
    pause_message: str | None = None
    failure_reason: str | None = None  # "task_failed", "deadline_exceeded", "budget_exceeded" or "aborted"
    gates: tuple[GateStatus, ...] = ()  # one per spec.quality_gates
    checkpoints: tuple[CheckpointStatus, ...] = ()  # one per spec.checkpoints
    started_at: datetime | None = None
    finished_at: datetime | None = None
    delays: tuple[DelayState, ...] = ()  # one per spec.delays
    reviews: tuple[Review, ...] = ()  # every decision taken at a checkpoint or an approval, in order
    # Derived from ``spec``; never compared or serialised, rebuilt when the spec object changes.
    _index: _SpecIndex | None = field(default=None, compare=False, repr=False)
    _tally: _Tally | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.gates) != len(self.spec.quality_gates):
            raise ValueError("RunState.gates must have one status per quality gate of the spec")
        if len(self.checkpoints) != len(self.spec.checkpoints):
            raise ValueError("RunState.checkpoints must have one status per checkpoint of the spec")
        if len(self.delays) != len(self.spec.delays):
            raise ValueError("RunState.delays must have one state per delay of the spec")

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_RUN_STATUSES

    def task_by_title(self, title: str) -> TaskState:
        return self.tasks[self._derived().id_by_title[title]]

    def task_spec(self, task_id: str) -> TaskSpec:
        """The spec of one task of the run, by id (a dictionary lookup, whatever the run's size)."""
        return self._derived().tasks[task_id]

    def _derived(self) -> _SpecIndex:
        index = self._index
        if index is None or index.spec is not self.spec:
            index = _index_spec(self.spec)
            object.__setattr__(self, "_index", index)
        return index

    def _counted(self) -> _Tally:
        tally = self._tally
        if tally is None or tally.tasks is not self.tasks or tally.spec is not self.spec:
            tally = _Tally.of(self.tasks, self._derived())
            object.__setattr__(self, "_tally", tally)
        return tally

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable document; ``RunState.from_json`` restores an equal state."""
        order = self._derived().tasks
        return {
            "version": 1,
            **self.header_json(),
            "spec": self.spec.to_document(),
            "tasks": [self.tasks[task_id].to_json() for task_id in order],
        }

    def header_json(self) -> dict[str, Any]:
        """The run-level fields only (no spec, no tasks): what a store that keeps tasks apart writes
        on every step, whatever the mission's size."""
        return {
            "runId": self.run_id,
            "missionId": self.mission_id,
            "status": self.status.value,
            "pauseReason": self.pause_reason.value if self.pause_reason is not None else None,
            "pauseMessage": self.pause_message,
            "failureReason": self.failure_reason,
            "gates": [g.value for g in self.gates],
            "checkpoints": [c.value for c in self.checkpoints],
            "startedAt": _format_time(self.started_at),
            "finishedAt": _format_time(self.finished_at),
            "delays": [d.to_json() for d in self.delays],
            "reviews": [r.to_json() for r in self.reviews],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunState:
        tasks = (TaskState.from_json(t) for t in data["tasks"])
        return cls.from_parts(data, MissionSpec.from_document(data["spec"]), {t.task_id: t for t in tasks})

    @classmethod
    def from_parts(cls, header: Mapping[str, Any], spec: MissionSpec, tasks: Mapping[str, TaskState]) -> RunState:
        """A state from ``header_json()``, its spec and its task states (in the spec's order)."""
        pause = header.get("pauseReason")
        return cls(
            run_id=header["runId"],
            mission_id=header["missionId"],
            spec=spec,
            status=MissionStatus(header["status"]),
            tasks=tasks,
            pause_reason=PauseReason(pause) if pause is not None else None,
            pause_message=header.get("pauseMessage"),
            failure_reason=header.get("failureReason"),
            gates=tuple(GateStatus(g) for g in header.get("gates") or ()),
            checkpoints=tuple(CheckpointStatus(c) for c in header.get("checkpoints") or ()),
            started_at=_parse_time(header.get("startedAt")),
            finished_at=_parse_time(header.get("finishedAt")),
            delays=tuple(DelayState.from_json(d) for d in header.get("delays") or ()),
            reviews=tuple(Review.from_json(r) for r in header.get("reviews") or ()),
        )


# --------------------------------------------------------------------------------------------
# Events: what the shell observed (past tense)


@dataclass(frozen=True)
class TaskClaimed:
    task_id: str
    attempt: int
    worker: str


@dataclass(frozen=True)
class TaskOutputProduced:
    task_id: str
    attempt: int
    chunk: str


@dataclass(frozen=True)
class TaskFinished:
    """The agent produced its final output."""

    task_id: str
    attempt: int
    output: str


@dataclass(frozen=True)
class TaskFailed:
    """The attempt failed; ``code`` says why (``orchestrator.failures.ErrorCode``, classified by the
    shell), which decides whether a retry is worth spending."""

    task_id: str
    attempt: int
    error: str
    code: str = ErrorCode.AGENT_ERROR


@dataclass(frozen=True)
class TaskTimedOut:
    task_id: str
    attempt: int


@dataclass(frozen=True)
class WorkerLost:
    """The attempt's worker stopped heart-beating: its outcome is unknown."""

    task_id: str
    attempt: int


@dataclass(frozen=True)
class AssessmentScored:
    """The judge's verdict: ``score`` is the weighted mean; ``error`` means the judge failed."""

    task_id: str
    attempt: int
    score: float | None
    criteria: tuple[Mapping[str, Any], ...] = ()
    error: str | None = None
    # Why the judge failed, when it did (an ``ErrorCode``; None: ``assessment_failed``).
    error_code: str | None = None


@dataclass(frozen=True)
class RetryDue:
    """The backoff timer of the attempt about to start fired."""

    task_id: str
    attempt: int


@dataclass(frozen=True)
class ResumeRequested:
    retry_failed: bool


@dataclass(frozen=True)
class AbortRequested:
    pass


@dataclass(frozen=True)
class DeadlineReached:
    pass


@dataclass(frozen=True)
class BudgetExceeded:
    """The run's recorded tokens or cost went over the mission's ``budget`` (the shell measures)."""


@dataclass(frozen=True)
class TaskAdded:
    """A task joins the running run (already validated against the whole spec)."""

    task: TaskSpec


@dataclass(frozen=True)
class TaskUpdated:
    task: TaskSpec


@dataclass(frozen=True)
class TaskRemoved:
    task_id: str


@dataclass(frozen=True)
class TaskRetryRequested:
    """An operator asks for one task to run again with a fresh retry budget: a failed or cancelled
    task itself, or, for a skipped task, the failed or cancelled tasks it was skipped because of."""

    task_id: str


@dataclass(frozen=True)
class ReassessRequested:
    """An operator asks for the last output of a task that failed its assessment to be scored again
    (e.g. after the judge was fixed); the agent does not run again."""

    task_id: str


@dataclass(frozen=True)
class TaskCancelRequested:
    """An operator stops one unfinished task: its attempt is cancelled and its dependents skipped."""

    task_id: str


@dataclass(frozen=True)
class ReviewSubmitted:
    """A person decided at a checkpoint or a side-effect approval: ``approve``, ``request_changes``
    (``feedback`` required; ``redo``: titles of the waiting checkpoints' afterTasks to re-run, all
    of them when empty) or ``reject``. ``reviewer_id``/``reviewer_name``: who (the API key)."""

    decision: ReviewDecision
    feedback: str | None = None
    redo: tuple[str, ...] = ()
    reviewer_id: str | None = None
    reviewer_name: str | None = None


@dataclass(frozen=True)
class CheckpointTimedOut:
    """Waiting checkpoint ``checkpoint`` (its position) got no answer within its ``timeout``."""

    checkpoint: int


@dataclass(frozen=True)
class ApprovalTimedOut:
    """The side-effect approval of ``attempt`` got no answer within its timeout."""

    task_id: str
    attempt: int


@dataclass(frozen=True)
class DelayElapsed:
    """Delay ``delay`` (its position) is over: its blocked tasks may start."""

    delay: int


Event: TypeAlias = (
    TaskClaimed
    | TaskOutputProduced
    | TaskFinished
    | TaskFailed
    | TaskTimedOut
    | WorkerLost
    | AssessmentScored
    | RetryDue
    | ResumeRequested
    | AbortRequested
    | DeadlineReached
    | BudgetExceeded
    | TaskAdded
    | TaskUpdated
    | TaskRemoved
    | TaskRetryRequested
    | TaskCancelRequested
    | ReassessRequested
    | ReviewSubmitted
    | CheckpointTimedOut
    | ApprovalTimedOut
    | DelayElapsed
)


TimerEvent: TypeAlias = DeadlineReached | RetryDue | TaskTimedOut | ApprovalTimedOut | CheckpointTimedOut | DelayElapsed


def timer_event(kind: str, key: str) -> TimerEvent | None:
    """The event a fired timer stands for, from its stored ``timers.kind`` and ``timers.key``:
    ``DeadlineReached``; ``RetryDue``, ``TaskTimedOut`` or ``ApprovalTimedOut`` of the attempt in
    the key; ``CheckpointTimedOut`` or ``DelayElapsed`` of the index in the key; None for a row no
    ``ScheduleTimer`` of the engine writes (see ``Timer.parse``), which the shell drops.
    """
    match Timer.parse(kind, key):
        case Timer(kind=TimerKind.DEADLINE):
            return DeadlineReached()
        case Timer(kind=TimerKind.RETRY, task_id=str(task_id), attempt=int(attempt)):
            return RetryDue(task_id, attempt)
        case Timer(kind=TimerKind.TIMEOUT, task_id=str(task_id), attempt=int(attempt)):
            return TaskTimedOut(task_id, attempt)
        case Timer(kind=TimerKind.APPROVAL, task_id=str(task_id), attempt=int(attempt)):
            return ApprovalTimedOut(task_id, attempt)
        case Timer(kind=TimerKind.CHECKPOINT, index=int(index)):
            return CheckpointTimedOut(index)
        case Timer(kind=TimerKind.DELAY, index=int(index)):
            return DelayElapsed(index)
    return None


# --------------------------------------------------------------------------------------------
# Effects: what the shell must do after committing the state (imperative)


@dataclass(frozen=True)
class StartTask:
    """Insert the attempt row and enqueue it after commit. ``model == ""``: the shell resolves it."""

    task_id: str
    attempt: int
    agent: str
    model: str


@dataclass(frozen=True)
class AssessTask:
    task_id: str
    attempt: int
    output: str


@dataclass(frozen=True)
class CancelTask:
    """Stop the attempt's agent (cooperatively, then by force) and mark the attempt cancelled."""

    task_id: str
    attempt: int
    reason: str


@dataclass(frozen=True)
class ScheduleTimer:
    """Arm (or re-arm) the timer stored as (``kind``, ``key``) to fire at ``due_at``.

    ``kind`` and ``key`` are a ``Timer``'s, as plain strings (what the shell stores); a fired
    timer comes back through ``timer_event(kind, key)``.
    """

    kind: str  # a TimerKind value
    key: str  # Timer.key: "run" for the deadline, else ``attempt_key``
    due_at: datetime

    @classmethod
    def of(cls, timer: Timer, due_at: datetime) -> ScheduleTimer:
        return cls(timer.kind.value, timer.key, due_at)


@dataclass(frozen=True)
class CancelTimer:
    """Delete the timer stored as (``kind``, ``key``), if it is still there."""

    kind: str  # a TimerKind value
    key: str

    @classmethod
    def of(cls, timer: Timer) -> CancelTimer:
        return cls(timer.kind.value, timer.key)


@dataclass(frozen=True)
class PublishEvent:
    """An SSE event; ``data`` always carries ``missionId`` and ``runId``."""

    type: str
    data: Mapping[str, Any]


Effect: TypeAlias = StartTask | AssessTask | CancelTask | ScheduleTimer | CancelTimer | PublishEvent


@dataclass(frozen=True)
class Decision:
    state: RunState
    effects: tuple[Effect, ...] = ()
    ignored: str | None = None  # why a duplicate or late event changed nothing
    # Ids of the tasks whose state this decision replaced, added or dropped, so that a store can
    # write only those; None means "unknown: compare the whole state".
    changed_tasks: frozenset[str] | None = None


# --------------------------------------------------------------------------------------------
# Entry points


def start_run(run_id: str, mission_id: str, spec: MissionSpec, now: datetime) -> Decision:
    """Begin a run: every task pending, the deadline armed, ready tasks started."""
    _require_aware(now)
    index = _index_spec(spec)
    state = RunState(
        run_id=run_id,
        mission_id=mission_id,
        spec=spec,
        status=MissionStatus.ACTIVE,
        tasks={
            task_id: TaskState(task_id=task_id, title=task.title, status=TaskStatus.PENDING)
            for task_id, task in index.tasks.items()
        },
        gates=(GateStatus.PENDING,) * len(spec.quality_gates),
        checkpoints=(CheckpointStatus.PENDING,) * len(spec.checkpoints),
        started_at=now,
        delays=(DelayState(),) * len(spec.delays),
        _index=index,
    )
    step = _Step(state, now)
    step.publish_mission_status()
    deadline = run_deadline(spec, now)
    if deadline is not None:
        if deadline <= now:
            _stop_run(step, MissionStatus.FAILED, FAILURE_DEADLINE)
            return step.decision()
        step.emit(ScheduleTimer.of(Timer.deadline(), deadline))
    _settle(step)
    return step.decision()


def run_deadline(spec: MissionSpec, started_at: datetime) -> datetime | None:
    """The earlier of the absolute ``deadline`` and ``deadlineAfter`` seconds after the run started."""
    candidates = [spec.deadline] if spec.deadline is not None else []
    if spec.deadline_after is not None:
        candidates.append(started_at + timedelta(seconds=spec.deadline_after))
    return min(candidates) if candidates else None


def _has_deadline(spec: MissionSpec) -> bool:
    return spec.deadline is not None or spec.deadline_after is not None


def decide(state: RunState, event: Event, now: datetime) -> Decision:
    """Apply one observed event to a run: the next state and the effects to carry out."""
    _require_aware(now)
    if state.status is MissionStatus.FAILED and isinstance(
        event, (ResumeRequested, TaskRetryRequested, ReassessRequested)
    ):
        return _continue_failed_run(state, event, now)
    if state.status not in LIVE_RUN_STATUSES:
        return _ignored(state, f"the run is {state.status.value}")
    match event:
        case TaskClaimed():
            # A claim changes no dependency, capacity (queued and running both occupy a slot),
            # gate or checkpoint, so there is nothing to settle.
            return _on_task_event(state, event, now, _mark_claimed, settle=False)
        case TaskOutputProduced():
            return _relay_output(state, event)
        case TaskFinished():
            return _on_task_event(state, event, now, _accept_final_output)
        case TaskFailed():
            return _on_task_event(state, event, now, _fail_with_error)
        case TaskTimedOut():
            return _on_task_event(state, event, now, _fail_with_timeout)
        case WorkerLost():
            return _on_task_event(state, event, now, _recover_lost_attempt)
        case AssessmentScored():
            return _on_task_event(state, event, now, _apply_assessment)
        case RetryDue():
            return _release_retry(state, event, now)
        case ResumeRequested():
            return _resume(state, event, now)
        case AbortRequested():
            step = _Step(state, now)
            _stop_run(step, MissionStatus.CANCELLED, FAILURE_ABORTED)
            return step.decision()
        case DeadlineReached():
            step = _Step(state, now)
            _stop_run(step, MissionStatus.FAILED, FAILURE_DEADLINE)
            return step.decision()
        case BudgetExceeded():
            step = _Step(state, now)
            _stop_run(step, MissionStatus.FAILED, FAILURE_BUDGET)
            return step.decision()
        case TaskAdded():
            return _add_task(state, event, now)
        case TaskUpdated():
            return _update_task(state, event, now)
        case TaskRemoved():
            return _remove_task(state, event, now)
        case TaskRetryRequested():
            return _retry_task(state, event, now)
        case TaskCancelRequested():
            return _cancel_task(state, event, now)
        case ReassessRequested():
            return _reassess(state, event, now)
        case ReviewSubmitted():
            return _review(state, event, now)
        case CheckpointTimedOut():
            return _checkpoint_timed_out(state, event, now)
        case ApprovalTimedOut():
            return _approval_timed_out(state, event, now)
        case DelayElapsed():
            return _delay_elapsed(state, event, now)
        case _:
            assert_never(event)


def decide_all(state: RunState, events: Sequence[tuple[Event, datetime]]) -> Decision:
    """Apply several events in order, each at its own time, as one decision: the state after the
    last, the effects of every event in order, every task any of them changed. Ignored only when
    every event was (the reasons joined).

    A shell that observed more than one fact before it could take the run's lock (a claim it had
    not yet announced, then the attempt's result) feeds them together: one step, one write.
    """
    if not events:
        raise ValueError("decide_all needs at least one event")
    effects: list[Effect] = []
    changed: set[str] | None = set()
    reasons: list[str] = []
    applied = False
    for event, now in events:
        decision = decide(state, event, now)
        state = decision.state
        if decision.ignored is not None:
            reasons.append(decision.ignored)
            continue
        applied = True
        effects.extend(decision.effects)
        if decision.changed_tasks is None or changed is None:
            changed = None
        else:
            changed |= decision.changed_tasks
    if not applied:
        return _ignored(state, "; ".join(reasons))
    return Decision(
        state=state, effects=tuple(effects), changed_tasks=frozenset(changed) if changed is not None else None
    )


# --------------------------------------------------------------------------------------------
# Retry policy


def _escalation_point(task: TaskSpec) -> int | None:
    """After how many failures attempts escalate; None when the policy has no escalation."""
    policy = task.retry_policy
    if policy is None or (policy.fallback_agent is None and policy.escalate_model is None):
        return None
    if policy.escalate_after is not None:
        return max(0, policy.escalate_after)
    return 1 + max(0, task.max_retries)


def max_attempts(task: TaskSpec) -> int:
    """How many failed attempts the retry policy allows before the task fails.

    ``1 + maxRetries`` attempts; an escalation without ``escalateAfter`` adds one final
    escalated attempt, while with ``escalateAfter`` the escalation happens inside that budget.
    """
    budget = 1 + max(0, task.max_retries)
    policy = task.retry_policy
    if _escalation_point(task) is not None and policy is not None and policy.escalate_after is None:
        budget += 1
    return budget


def assignment(task: TaskSpec, failed_attempts: int, agents: Mapping[str, AgentSpec]) -> tuple[str, str]:
    """The (agent, model) of the next attempt after ``failed_attempts`` counted failures.

    An agent outside the mission team (a project agent) gets model ``""``: the shell resolves it.
    """
    point = _escalation_point(task)
    policy = task.retry_policy
    if point is not None and policy is not None and failed_attempts >= point:
        agent = policy.fallback_agent or task.assign_to
        return agent, policy.escalate_model or _model_of(agent, agents)
    return task.assign_to, _model_of(task.assign_to, agents)


def _model_of(agent: str, agents: Mapping[str, AgentSpec]) -> str:
    spec = agents.get(agent)
    return spec.model if spec is not None else ""


# --------------------------------------------------------------------------------------------
# The decision in the making


class _Step:
    """A private working copy of a run state plus the effects decided so far."""

    def __init__(self, state: RunState, now: datetime) -> None:
        self.now = now
        self.run_id = state.run_id
        self.mission_id = state.mission_id
        self.spec = state.spec
        self.index = state._derived()
        self.status = state.status
        self.tasks: dict[str, TaskState] = dict(state.tasks)
        self.changed: set[str] = set()
        self._tally: _Tally | None = state._counted().copy_for(self.tasks)
        self.pause_reason = state.pause_reason
        self.pause_message = state.pause_message
        self.failure_reason = state.failure_reason
        self.gates = list(state.gates)
        self.checkpoints = list(state.checkpoints)
        self.delays = list(state.delays)
        self.reviews = list(state.reviews)
        self.started_at = state.started_at
        self.finished_at = state.finished_at
        self.effects: list[Effect] = []
        # Set when a task may have become unreachable, so ``_skip_unreachable_tasks`` must look.
        self.reachability_changed = False

    def emit(self, effect: Effect) -> None:
        self.effects.append(effect)

    def publish(self, type: str, data: Mapping[str, Any]) -> None:
        self.effects.append(PublishEvent(type, {"missionId": self.mission_id, "runId": self.run_id, **data}))

    @property
    def tally(self) -> _Tally:
        if self._tally is None:
            self._tally = _Tally.of(self.tasks, self.index)
        return self._tally

    def put(self, task: TaskState, *, announce: bool = True) -> None:
        """Store a changed task (keeping the tally current) and announce it with ``task:status``."""
        old = self.tasks.get(task.task_id)
        self.tasks[task.task_id] = task
        self.changed.add(task.task_id)
        if self._tally is not None:
            self._tally.moved(old, task, self.index)
        if task.status in _DEAD:
            self.reachability_changed = True
        if not announce:
            return
        data: dict[str, Any] = {
            "taskId": task.task_id,
            "title": task.title,
            "status": task.status.value,
            "attempt": task.attempt,
            "agent": task.agent,
            "model": task.model,
        }
        if task.error is not None:
            data["error"] = task.error
        if task.retry_at is not None:
            data["retryAt"] = format_timestamp(task.retry_at)
        self.publish("task:status", data)

    def publish_mission_status(self, reason: str | None = None) -> None:
        data: dict[str, Any] = {"status": self.status.value}
        if self.status is MissionStatus.PAUSED:
            data["pauseReason"] = self.pause_reason.value if self.pause_reason is not None else None
            data["pauseMessage"] = self.pause_message
        if reason is not None:
            data["reason"] = reason
        self.publish("mission:status", data)

    def pause(self, reason: PauseReason, message: str) -> None:
        """Pause the run; while already paused the latest cause is the one shown."""
        self.status = MissionStatus.PAUSED
        self.pause_reason = reason
        self.pause_message = message
        self.publish_mission_status()

    def drop(self, task_id: str) -> None:
        old = self.tasks.pop(task_id)
        self.changed.add(task_id)
        if self._tally is not None:
            self._tally.moved(old, None, self.index)

    def change_spec(self, spec: MissionSpec, index: _SpecIndex) -> None:
        self.spec = spec
        self.index = index
        self._tally = None  # it followed the old spec's dependencies
        self.reachability_changed = True

    def decision(self) -> Decision:
        state = RunState(
            run_id=self.run_id,
            mission_id=self.mission_id,
            spec=self.spec,
            status=self.status,
            tasks=self.tasks,
            pause_reason=self.pause_reason,
            pause_message=self.pause_message,
            failure_reason=self.failure_reason,
            gates=tuple(self.gates),
            checkpoints=tuple(self.checkpoints),
            started_at=self.started_at,
            finished_at=self.finished_at,
            delays=tuple(self.delays),
            reviews=tuple(self.reviews),
            _index=self.index,
            _tally=self.tally,
        )
        return Decision(state=state, effects=tuple(self.effects), changed_tasks=frozenset(self.changed))


def _ignored(state: RunState, reason: str) -> Decision:
    return Decision(state=state, effects=(), ignored=reason, changed_tasks=frozenset())


# --------------------------------------------------------------------------------------------
# Task events

# Which task statuses each task event can apply to; in any other status it is late or a duplicate.
_ACCEPTS: Final[Mapping[type[object], frozenset[TaskStatus]]] = {
    TaskClaimed: frozenset({TaskStatus.QUEUED}),
    TaskOutputProduced: frozenset({TaskStatus.RUNNING}),
    TaskFinished: frozenset({TaskStatus.QUEUED, TaskStatus.RUNNING}),
    TaskFailed: frozenset({TaskStatus.QUEUED, TaskStatus.RUNNING}),
    TaskTimedOut: frozenset({TaskStatus.QUEUED, TaskStatus.RUNNING}),
    WorkerLost: frozenset({TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.ASSESSING}),
    AssessmentScored: frozenset({TaskStatus.ASSESSING}),
}


class _TaskEvent(Protocol):
    @property
    def task_id(self) -> str: ...

    @property
    def attempt(self) -> int: ...


_E = TypeVar("_E", bound=_TaskEvent)


def _current_attempt(state: RunState, event: _TaskEvent) -> TaskState | str:
    """The task the event is about, or why the event is late, a duplicate or unknown."""
    task = state.tasks.get(event.task_id)
    if task is None:
        return f"unknown task {event.task_id!r}"
    if event.attempt != task.attempt:
        return f"attempt {event.attempt} of task {task.task_id!r} is not its current attempt ({task.attempt})"
    if task.status not in _ACCEPTS[type(event)]:
        return f"{type(event).__name__} does not apply to task {task.task_id!r} while it is {task.status.value}"
    return task


def _on_task_event(
    state: RunState,
    event: _E,
    now: datetime,
    rule: Callable[[_Step, TaskState, _E], None],
    *,
    settle: bool = True,
) -> Decision:
    found = _current_attempt(state, event)
    if isinstance(found, str):
        return _ignored(state, found)
    step = _Step(state, now)
    rule(step, found, event)
    if settle:
        _settle(step)
    return step.decision()


def _mark_claimed(step: _Step, task: TaskState, event: TaskClaimed) -> None:
    """A claimed attempt is running, and its timeout (if any) is armed from the claim."""
    step.put(replace(task, status=TaskStatus.RUNNING, worker=event.worker, started_at=step.now))
    timeout = step.index.tasks[task.task_id].timeout
    if timeout is not None:
        step.emit(ScheduleTimer.of(Timer.timeout(task.task_id, task.attempt), step.now + timedelta(seconds=timeout)))


def _relay_output(state: RunState, event: TaskOutputProduced) -> Decision:
    """Output of the current running attempt is relayed as ``task:output``; nothing else changes."""
    found = _current_attempt(state, event)
    if isinstance(found, str):
        return _ignored(state, found)
    data = {
        "missionId": state.mission_id,
        "runId": state.run_id,
        "taskId": event.task_id,
        "attempt": event.attempt,
        "chunk": event.chunk,
    }
    return Decision(state=state, effects=(PublishEvent("task:output", data),), changed_tasks=frozenset())


def _disarm_timeout(step: _Step, task: TaskState) -> None:
    """A running attempt that ends by itself no longer needs its timeout timer."""
    if task.status is TaskStatus.RUNNING and step.index.tasks[task.task_id].timeout is not None:
        step.emit(CancelTimer.of(Timer.timeout(task.task_id, task.attempt)))


def _accept_final_output(step: _Step, task: TaskState, event: TaskFinished) -> None:
    """A finished attempt is assessed when the task has expectations, else it completes unscored."""
    _disarm_timeout(step, task)
    # The task follows its attempt, by the rule the shell writes the attempt row by.
    expectations = step.index.tasks[task.task_id].expectations
    if attempt_status_after_result(failed=False, assessed=bool(expectations)) is AttemptStatus.ASSESSING:
        step.put(replace(task, status=TaskStatus.ASSESSING, output=event.output))
        step.emit(AssessTask(task.task_id, task.attempt, event.output))
    else:
        step.put(replace(task, status=TaskStatus.COMPLETED, output=event.output, finished_at=step.now))


def _fail_with_error(step: _Step, task: TaskState, event: TaskFailed) -> None:
    """An attempt that reported an error is a failed attempt."""
    _disarm_timeout(step, task)
    _record_failed_attempt(step, task, event.error, code=error_code(event.code))


def _fail_with_timeout(step: _Step, task: TaskState, event: TaskTimedOut) -> None:
    """An attempt that ran out of time is stopped and is a failed attempt."""
    step.emit(CancelTask(task.task_id, task.attempt, "timeout"))
    timeout = step.index.tasks[task.task_id].timeout
    message = f"timed out after {timeout:g} seconds" if timeout is not None else "timed out"
    _record_failed_attempt(step, task, message, code=ErrorCode.TIMEOUT)


def _apply_assessment(step: _Step, task: TaskState, event: AssessmentScored) -> None:
    """A score at or above the quality threshold completes the task; anything else is a failed attempt."""
    threshold = step.spec.quality_threshold
    # The rule the shell records the attempt row's status by, too.
    passed = assessment_passes(event.score, event.error, threshold)
    criteria = tuple(dict(c) for c in event.criteria)
    data: dict[str, Any] = {
        "taskId": task.task_id,
        "attempt": task.attempt,
        "score": event.score,
        "threshold": threshold,
        "passed": passed,
        "criteria": [dict(c) for c in criteria],
    }
    if event.error is not None:
        data["error"] = event.error
    step.publish("task:assessment", data)
    scored = replace(task, score=event.score, criteria=criteria)
    if passed:
        step.put(replace(scored, status=TaskStatus.COMPLETED, error=None, finished_at=step.now))
        return
    code = ErrorCode.ASSESSMENT_FAILED
    if event.error is not None:
        message = f"assessment failed: {event.error}"
        code = error_code(event.error_code, ErrorCode.ASSESSMENT_FAILED)
    elif event.score is None:
        message = "assessment produced no score"
    else:
        message = f"assessment score {event.score:g} is below the quality threshold {threshold:g}"
        code = ErrorCode.LOW_SCORE
    _record_failed_attempt(step, scored, message, _judge_reasons(criteria), code=code)


def _judge_reasons(criteria: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    reasons: list[str] = []
    for item in criteria:
        reason = item.get("reason")
        if not isinstance(reason, str) or not reason:
            continue
        name = item.get("criterion") or item.get("type")
        score = item.get("score")
        label = f"{name}" if name else "expectation"
        if isinstance(score, (int, float)):
            label += f" (score {score:g})"
        reasons.append(f"Assessor on {label}: {reason}")
    return tuple(reasons)


def _record_failed_attempt(
    step: _Step, task: TaskState, message: str, notes: tuple[str, ...] = (), *, code: ErrorCode = ErrorCode.AGENT_ERROR
) -> None:
    """A failed attempt counts against the retry budget: retried (after backoff) while it lasts, else
    the task fails; a failure no retry can fix spends no retry on the same agent and model
    (``orchestrator.failures.after_failure``). Every failed attempt is also streamed as ``error``."""
    spec = step.index.tasks[task.task_id]
    verdict = after_failure(
        code=code,
        failed_before=task.failed_attempts,
        budget=max_attempts(spec),
        current=(task.agent, task.model),
        escalation_point=_escalation_point(spec),
        assignment_after=lambda failed: assignment(spec, failed, step.index.agents),
    )
    if verdict.note:
        message = f"{message} ({verdict.note})"
    feedback = (*task.feedback, f"Attempt {task.attempt} failed: {message}", *notes)
    failed_task = replace(task, failed_attempts=verdict.failed_attempts, error=message, feedback=feedback)
    _publish_error(step, code, message, task, will_retry=not verdict.final)
    if verdict.final:
        step.put(replace(failed_task, status=TaskStatus.FAILED, finished_at=step.now))
        return
    backoff = spec.retry_policy.backoff if spec.retry_policy is not None else 0.0
    retry_at = step.now + timedelta(seconds=backoff) if backoff > 0 else None
    step.put(replace(failed_task, status=TaskStatus.PENDING, retry_at=retry_at))
    if retry_at is not None:
        step.emit(ScheduleTimer.of(Timer.retry(task.task_id, task.attempt + 1), retry_at))


def _publish_error(
    step: _Step, code: ErrorCode, message: str, task: TaskState | None = None, *, will_retry: bool = False
) -> None:
    """The ``error`` event: a stable ``code``, a human ``message``, and the task and attempt it is
    about (none for an error that stopped the run)."""
    data: dict[str, Any] = {"code": code.value, "message": message}
    if task is not None:
        data.update(
            taskId=task.task_id,
            title=task.title,
            attempt=task.attempt,
            agent=task.agent,
            model=task.model,
            willRetry=will_retry,
        )
    step.publish("error", data)


def _recover_lost_attempt(step: _Step, task: TaskState, event: WorkerLost) -> None:
    """A lost attempt is re-run without counting as a failure, except a started side-effecting task,
    which waits for approval."""
    if task.status is TaskStatus.ASSESSING:
        # The agent's output is known; only the judge was lost, and judging again is harmless.
        step.emit(AssessTask(task.task_id, task.attempt, task.output or ""))
        return
    _disarm_timeout(step, task)
    step.emit(CancelTask(task.task_id, task.attempt, "worker_lost"))
    spec = step.index.tasks[task.task_id]
    if spec.side_effects and task.status is TaskStatus.RUNNING:
        step.put(replace(task, status=TaskStatus.AWAITING_APPROVAL, error="worker lost; outcome unknown"))
        waits = step.spec.approval_timeout_of(spec)
        if waits is not None:
            step.emit(
                ScheduleTimer.of(Timer.approval(task.task_id, task.attempt), step.now + timedelta(seconds=waits[0]))
            )
        step.pause(
            PauseReason.APPROVAL,
            f'Task "{task.title}" has side effects and its worker was lost during attempt '
            f"{task.attempt}, so its outcome is unknown. Resume with retryFailed=true to run it "
            "again, or retryFailed=false to mark it failed.",
        )
        return
    step.put(replace(task, status=TaskStatus.PENDING, error="worker lost; the attempt is run again"))


def _release_retry(state: RunState, event: RetryDue, now: datetime) -> Decision:
    """A fired backoff timer makes exactly its pending retry startable."""
    task = state.tasks.get(event.task_id)
    if task is None:
        return _ignored(state, f"unknown task {event.task_id!r}")
    if task.status is not TaskStatus.PENDING or task.retry_at is None or event.attempt != task.attempt + 1:
        return _ignored(state, f"no retry of task {task.task_id!r} is waiting for attempt {event.attempt}")
    step = _Step(state, now)
    step.put(replace(task, retry_at=None), announce=False)
    _settle(step)
    return step.decision()


# --------------------------------------------------------------------------------------------
# Settling: what follows from the new facts


def _settle(step: _Step) -> None:
    """Bring a live run to rest: skip, judge gates, reach checkpoints, start ready tasks, finish."""
    if step.status not in LIVE_RUN_STATUSES:
        return
    if step.reachability_changed:
        _skip_unreachable_tasks(step)
        _lift_pause_with_no_cause_left(step)
    _judge_gates(step)
    _reach_checkpoints(step)
    _start_delays(step)
    _start_ready_tasks(step)
    _finish_when_nothing_left(step)


def _unreachable_because(step: _Step, task_id: str) -> str | None:
    """Why the task can never run in this run (a dead dependency or checkpoint), or None."""
    tasks = step.tasks
    for dep in step.index.dependencies[task_id]:
        upstream = tasks[dep]
        if upstream.status in _DEAD:
            return f'dependency "{upstream.title}" {upstream.status.value}'
    for i in step.index.checkpoints_blocking.get(task_id, ()):
        label = _label(step.spec.checkpoints[i].name, i)
        if step.checkpoints[i] is CheckpointStatus.FAILED:
            return f"checkpoint {label} timed out"
        if step.checkpoints[i] is CheckpointStatus.PENDING and any(
            tasks[t].status in _DEAD for t in step.index.checkpoint_after[i]
        ):
            return f"checkpoint {label} can no longer be reached"
    for i in step.index.delays_blocking.get(task_id, ()):
        if step.delays[i].status is DelayStatus.PENDING and any(
            tasks[t].status in _DEAD for t in step.index.delay_after[i]
        ):
            return f"delay {_label(step.spec.delays[i].name, i)} can no longer start"
    return None


def _skip_unreachable_tasks(step: _Step) -> None:
    """Every pending task downstream (transitively) of a task that cannot complete is skipped."""
    for task_id in step.index.topological:
        task = step.tasks[task_id]
        if task.status is TaskStatus.PENDING:
            why = _unreachable_because(step, task_id)
            if why is not None:
                step.put(replace(task, status=TaskStatus.SKIPPED, error=why, retry_at=None, finished_at=step.now))
    step.reachability_changed = False


def _gate_verdict(gate: GateSpec, after: list[TaskState]) -> tuple[bool, float | None, str]:
    """Judge a gate: (passed, mean score of the scored afterTasks, reason)."""
    scores = [t.score for t in after if t.score is not None]
    mean = sum(scores) / len(scores) if scores else None
    problems: list[str] = []
    if gate.min_score is not None:
        if mean is None:
            problems.append(f"none of its afterTasks has a score, so minScore {gate.min_score:g} cannot be shown")
        elif mean < gate.min_score:
            problems.append(f"mean score {mean:.2f} is below minScore {gate.min_score:g}")
    if gate.require_all_passed:
        unfinished = [f'"{t.title}" {t.status.value}' for t in after if t.status is not TaskStatus.COMPLETED]
        if unfinished:
            problems.append("not every afterTask completed: " + ", ".join(unfinished))
    if problems:
        return False, mean, "; ".join(problems)
    return True, mean, "passed"


def _judge_gates(step: _Step) -> None:
    """A gate is judged once, when all its afterTasks are terminal; a failing gate blocks and pauses
    the run, unless every task it blocks has already ended (see ``_gate_holds_tasks``)."""
    for i, gate in enumerate(step.spec.quality_gates):
        if step.gates[i] is not GateStatus.PENDING:
            continue
        after = [step.tasks[t] for t in step.index.gate_after[i]]
        if any(t.status not in TERMINAL_TASK_STATUSES for t in after):
            continue
        passed, mean, reason = _gate_verdict(gate, after)
        if passed:
            step.gates[i] = GateStatus.PASSED
            continue
        step.gates[i] = GateStatus.BLOCKED
        step.publish(
            "gate:blocked",
            {
                "gate": i,
                "name": gate.name,
                "afterTasks": list(gate.after_tasks),
                "blocksTasks": list(gate.blocks_tasks),
                "score": mean,
                "minScore": gate.min_score,
                "requireAllPassed": gate.require_all_passed,
                "reason": reason,
            },
        )
        if _gate_holds_tasks(step, i):
            step.pause(PauseReason.QUALITY_GATE, f"Quality gate {_label(gate.name, i)} blocked: {reason}")


def _gate_holds_tasks(step: _Step, i: int) -> bool:
    """Whether blocked gate ``i`` holds back a task that could still run.

    A task a gate blocks depends (transitively) on the gate's afterTasks, so when an afterTask failed
    for good every blocked task was skipped before the gate was judged: the gate then holds
    nothing, and pausing for it would wait for a person with nothing to decide. The run goes on
    and ends ``failed`` (DESIGN §4: a task that exhausted its retries fails the mission); a resume
    with ``retryFailed`` of that failed run re-runs the afterTask and judges the gate again.
    """
    blocked = step.spec.quality_gates[i].blocks_tasks
    return any(step.tasks[step.index.id_by_title[title]].status not in TERMINAL_TASK_STATUSES for title in blocked)


def _lift_pause_with_no_cause_left(step: _Step) -> None:
    """A paused run none of whose causes is left is active again, so it can go on or finish: every
    blocked gate holds nothing any more (its blocked tasks were skipped since, because another
    afterTask or dependency failed), no checkpoint is waiting and no task awaits approval (a
    review decided it, or an operator cancelled it). While a cause is left the run stays paused,
    and when the cause it shows was settled it shows one that is left.
    """
    if step.status is not MissionStatus.PAUSED:
        return
    waiting = next((i for i, c in enumerate(step.checkpoints) if c is CheckpointStatus.WAITING), None)
    awaiting = next((t for t in step.index.tasks if step.tasks[t].status is TaskStatus.AWAITING_APPROVAL), None)
    gate = next((i for i, g in enumerate(step.gates) if g is GateStatus.BLOCKED and _gate_holds_tasks(step, i)), None)
    left: dict[PauseReason, str] = {}
    if waiting is not None:
        left[PauseReason.CHECKPOINT] = step.spec.checkpoints[waiting].message
    if awaiting is not None:
        title = step.tasks[awaiting].title
        left[PauseReason.APPROVAL] = f'Task "{title}" has side effects and its outcome is unknown: it awaits approval.'
    if gate is not None:
        left[PauseReason.QUALITY_GATE] = f"Quality gate {_label(step.spec.quality_gates[gate].name, gate)} is blocked."
    if not left:
        step.status = MissionStatus.ACTIVE
        step.pause_reason = None
        step.pause_message = None
        step.publish_mission_status()
    elif step.pause_reason not in left:
        reason, message = next(iter(left.items()))
        step.pause(reason, message)


def _reach_checkpoints(step: _Step) -> None:
    """A checkpoint is reached once, when all its afterTasks completed, and pauses the run."""
    for i, checkpoint in enumerate(step.spec.checkpoints):
        if step.checkpoints[i] is not CheckpointStatus.PENDING:
            continue
        if any(step.tasks[t].status is not TaskStatus.COMPLETED for t in step.index.checkpoint_after[i]):
            continue
        step.checkpoints[i] = CheckpointStatus.WAITING
        data: dict[str, Any] = {
            "checkpoint": i,
            "name": checkpoint.name,
            "message": checkpoint.message,
            "afterTasks": list(checkpoint.after_tasks),
        }
        if checkpoint.timeout is not None:
            due = step.now + timedelta(seconds=checkpoint.timeout)
            step.emit(ScheduleTimer.of(Timer.checkpoint(i), due))
            data["timeoutAt"] = format_timestamp(due)
            data["onTimeout"] = checkpoint.on_timeout or DEFAULT_ON_TIMEOUT
        step.publish("checkpoint:waiting", data)
        step.pause(PauseReason.CHECKPOINT, checkpoint.message)


def _start_delays(step: _Step) -> None:
    """A delay starts once, when all its afterTasks completed: its blocked tasks wait its duration
    (a timer row), announced by ``delay:started``."""
    for i, delay in enumerate(step.spec.delays):
        if step.delays[i].status is not DelayStatus.PENDING:
            continue
        if any(step.tasks[t].status is not TaskStatus.COMPLETED for t in step.index.delay_after[i]):
            continue
        until = step.now + timedelta(seconds=delay.seconds)
        step.delays[i] = DelayState(DelayStatus.WAITING, until)
        step.emit(ScheduleTimer.of(Timer.delay(i), until))
        step.publish(
            "delay:started",
            {
                "delay": i,
                "name": delay.name,
                "afterTasks": list(delay.after_tasks),
                "blocksTasks": list(delay.blocks_tasks),
                "seconds": delay.seconds,
                "until": format_timestamp(until),
            },
        )


def _is_ready(step: _Step, task: TaskState) -> bool:
    """Ready: pending, backoff over, every dependency completed, no unpassed gate or checkpoint in the way."""
    if task.status is not TaskStatus.PENDING:
        return False
    if task.retry_at is not None and task.retry_at > step.now:
        return False
    tasks = step.tasks
    index = step.index
    if not _dependencies_completed(tasks, index, task.task_id):
        return False
    if any(
        step.gates[i] not in (GateStatus.PASSED, GateStatus.OVERRIDDEN)
        for i in index.gates_blocking.get(task.task_id, ())
    ):
        return False
    if any(step.delays[i].status is not DelayStatus.ELAPSED for i in index.delays_blocking.get(task.task_id, ())):
        return False
    return all(
        step.checkpoints[i] is CheckpointStatus.APPROVED for i in index.checkpoints_blocking.get(task.task_id, ())
    )


def _start_ready_tasks(step: _Step) -> None:
    """While active, ready tasks start highest priority first (ties: document order) within the agent
    and mission limits."""
    if step.status is not MissionStatus.ACTIVE:
        return
    index = step.index
    tally = step.tally
    mission_limit = _limit(step.spec.max_concurrency)
    if mission_limit is not None and tally.count(*_OCCUPYING) >= mission_limit:
        return
    # Only the frontier (pending, dependencies completed) can be ready, and it is kept in start
    # order, so the scan stops as soon as the mission is full. A copy: starting removes from it.
    for _, _, task_id in list(tally.frontier):
        if mission_limit is not None and tally.count(*_OCCUPYING) >= mission_limit:
            break
        task = step.tasks[task_id]
        if not _is_ready(step, task):
            continue
        agent, model = assignment(index.tasks[task.task_id], task.failed_attempts, index.agents)
        agent_spec = index.agents.get(agent)
        agent_limit = _limit(agent_spec.max_concurrency) if agent_spec is not None else None
        if agent_limit is not None and tally.occupied_by_agent.get(agent, 0) >= agent_limit:
            continue
        _start_attempt(step, task, agent, model)


def _limit(value: int | None) -> int | None:
    # A limit below one would stall the run forever; treat it as one.
    return None if value is None else max(1, value)


def _start_attempt(step: _Step, task: TaskState, agent: str, model: str) -> None:
    """A started task is queued as a new attempt (attempt + 1) for the shell to enqueue."""
    attempt = task.attempt + 1
    if task.retry_at is not None:
        step.emit(CancelTimer.of(Timer.retry(task.task_id, attempt)))
    step.emit(StartTask(task.task_id, attempt, agent, model))
    step.put(
        replace(
            task,
            status=TaskStatus.QUEUED,
            attempt=attempt,
            agent=agent,
            model=model,
            score=None,
            criteria=(),
            error=None,
            retry_at=None,
            worker=None,
            started_at=None,
            finished_at=None,
        )
    )


def _summary(tasks: Iterable[TaskState]) -> dict[str, int]:
    counts = {"completed": 0, "failed": 0, "skipped": 0, "cancelled": 0}
    for task in tasks:
        if task.status.value in counts:
            counts[task.status.value] += 1
    return counts


def _finish_when_nothing_left(step: _Step) -> None:
    """An active run with no unfinished task ends: completed if every task completed, else failed."""
    if step.status is not MissionStatus.ACTIVE:
        return
    tally = step.tally
    if tally.count(*_UNFINISHED):
        return
    all_completed = tally.count(TaskStatus.COMPLETED) == len(step.tasks)
    status = MissionStatus.COMPLETED if all_completed else MissionStatus.FAILED
    reason = None
    if not all_completed:
        only_cancelled = tally.count(TaskStatus.CANCELLED) and not tally.count(TaskStatus.FAILED)
        reason = FAILURE_TASK_CANCELLED if only_cancelled else FAILURE_TASK_FAILED
    _end_run(step, status, reason)
    if _has_deadline(step.spec):
        step.emit(CancelTimer.of(Timer.deadline()))
    for i, delay in enumerate(step.delays):
        if delay.status is DelayStatus.WAITING:  # its blocked tasks were skipped meanwhile
            step.emit(CancelTimer.of(Timer.delay(i)))


def _end_run(step: _Step, status: MissionStatus, reason: str | None) -> None:
    step.status = status
    step.failure_reason = reason
    step.pause_reason = None
    step.pause_message = None
    step.finished_at = step.now
    step.publish_mission_status(reason)
    step.publish(
        "mission:done",
        {"status": status.value, "reason": reason, "summary": _summary(step.tasks.values())},
    )


def _stop_run(step: _Step, status: MissionStatus, reason: str) -> None:
    """Stopping (abort, deadline or budget) cancels every unfinished task, its agent and its timers, and
    ends the run."""
    for task_id in step.index.tasks:
        task = step.tasks[task_id]
        if task.status in TERMINAL_TASK_STATUSES:
            continue
        if task.status in _IN_FLIGHT:
            step.emit(CancelTask(task_id, task.attempt, reason))
        _disarm_timeout(step, task)
        _disarm_approval(step, task)
        if task.status is TaskStatus.PENDING and task.retry_at is not None:
            step.emit(CancelTimer.of(Timer.retry(task_id, task.attempt + 1)))
        step.put(replace(task, status=TaskStatus.CANCELLED, retry_at=None, finished_at=step.now))
    for i, checkpoint in enumerate(step.checkpoints):
        if checkpoint is CheckpointStatus.WAITING:
            _disarm_checkpoint(step, i)
    for i, delay in enumerate(step.delays):
        if delay.status is DelayStatus.WAITING:
            step.emit(CancelTimer.of(Timer.delay(i)))
    if _has_deadline(step.spec) and reason != FAILURE_DEADLINE:
        step.emit(CancelTimer.of(Timer.deadline()))
    stopped_by = _STOPPING_ERRORS.get(reason)
    if stopped_by is not None:
        _publish_error(step, *stopped_by)
    _end_run(step, status, reason)


# The run-stopping reasons that are errors (an abort is a person's choice, not an error).
_STOPPING_ERRORS: Final[Mapping[str, tuple[ErrorCode, str]]] = {
    FAILURE_DEADLINE: (ErrorCode.DEADLINE_EXCEEDED, "the run reached its deadline and was stopped"),
    FAILURE_BUDGET: (ErrorCode.BUDGET_EXCEEDED, "the run went over its budget and was stopped"),
}


def _disarm_checkpoint(step: _Step, i: int) -> None:
    """A waiting checkpoint that was decided (or whose run ended) no longer needs its timeout."""
    if step.spec.checkpoints[i].timeout is not None:
        step.emit(CancelTimer.of(Timer.checkpoint(i)))


def _disarm_approval(step: _Step, task: TaskState) -> None:
    """A task that no longer awaits approval no longer needs its approval timeout."""
    if task.status is TaskStatus.AWAITING_APPROVAL and step.spec.approval_timeout_of(step.index.tasks[task.task_id]):
        step.emit(CancelTimer.of(Timer.approval(task.task_id, task.attempt)))


# --------------------------------------------------------------------------------------------
# Resume


def _resume(state: RunState, event: ResumeRequested, now: datetime) -> Decision:
    """A resume settles every cause of the pause at once, then the run goes on."""
    if state.status is not MissionStatus.PAUSED:
        return _ignored(state, "the run is not paused")
    step = _Step(state, now)
    _reactivate(step)
    _approve_waiting_checkpoints(step)
    _settle_failures(step, event.retry_failed)
    _settle(step)
    return step.decision()


def _reactivate(step: _Step) -> None:
    """The run is active again (after a pause, or a failure an operator continues)."""
    step.status = MissionStatus.ACTIVE
    step.pause_reason = None
    step.pause_message = None
    step.failure_reason = None
    step.finished_at = None
    step.publish_mission_status()


def _settle_failures(step: _Step, retry_failed: bool) -> None:
    """What a resume does with what went wrong: with ``retry_failed`` every failed task, and the
    failed or low-scoring afterTasks of a blocked gate, re-run with a fresh budget and what was
    skipped because of them is pending again; without it blocked gates are overridden. A task
    awaiting approval runs again with ``retry_failed`` and fails otherwise."""
    rerun = _reopen_blocked_gates(step, retry_failed)
    if retry_failed:
        for task_id in step.index.tasks:
            if step.tasks[task_id].status is TaskStatus.FAILED:
                rerun.setdefault(task_id, ())
    _decide_awaiting_approval(step, retry_failed)
    for task_id in step.index.tasks:
        if task_id in rerun:
            _give_fresh_budget(step, step.tasks[task_id], rerun[task_id])
    if retry_failed:
        _unskip_reachable_tasks(step)
    step.reachability_changed = True


def _approve_waiting_checkpoints(step: _Step) -> None:
    """A resume approves every checkpoint that was waiting."""
    for i, status in enumerate(step.checkpoints):
        if status is CheckpointStatus.WAITING:
            _disarm_checkpoint(step, i)
            step.checkpoints[i] = CheckpointStatus.APPROVED


def _reopen_blocked_gates(step: _Step, retry_failed: bool) -> dict[str, tuple[str, ...]]:
    """Without retryFailed a blocked gate is overridden; with it the gate is judged again after its
    failed or low-scoring afterTasks re-run.

    Returns the afterTasks to re-run, with the notes their next prompt should carry.
    """
    rerun: dict[str, tuple[str, ...]] = {}
    threshold = step.spec.quality_threshold
    for i, gate in enumerate(step.spec.quality_gates):
        if step.gates[i] is not GateStatus.BLOCKED:
            continue
        if not retry_failed:
            step.gates[i] = GateStatus.OVERRIDDEN
            continue
        step.gates[i] = GateStatus.PENDING
        for task_id in step.index.gate_after[i]:
            task = step.tasks[task_id]
            if task.status is TaskStatus.FAILED:
                rerun.setdefault(task_id, ())
            elif task.score is not None and (
                task.score < threshold or (gate.min_score is not None and task.score < gate.min_score)
            ):
                note = (
                    f"Attempt {task.attempt} scored {task.score:g}, too low for quality gate "
                    f"{_label(gate.name, i)} (minScore {gate.min_score if gate.min_score is not None else threshold:g})"
                )
                rerun[task_id] = (*rerun.get(task_id, ()), note, *_judge_reasons(task.criteria))
    return rerun


def _decide_awaiting_approval(step: _Step, retry_failed: bool) -> None:
    """A task awaiting approval runs again with retryFailed, and otherwise fails without being re-run."""
    for task_id in step.index.tasks:
        task = step.tasks[task_id]
        if task.status is not TaskStatus.AWAITING_APPROVAL:
            continue
        _disarm_approval(step, task)
        if retry_failed:
            step.put(replace(task, status=TaskStatus.PENDING, error=None))
        else:
            _publish_error(step, ErrorCode.OUTCOME_UNKNOWN, UNKNOWN_OUTCOME_ERROR, task)
            step.put(replace(task, status=TaskStatus.FAILED, error=UNKNOWN_OUTCOME_ERROR, finished_at=step.now))


def _give_fresh_budget(step: _Step, task: TaskState, notes: tuple[str, ...]) -> None:
    """A task re-run by a resume starts over with its whole retry budget; attempt numbers keep counting."""
    step.put(
        replace(
            task,
            status=TaskStatus.PENDING,
            failed_attempts=0,
            error=None,
            retry_at=None,
            finished_at=None,
            feedback=task.feedback + notes,
        )
    )


def _unskip_reachable_tasks(step: _Step) -> None:
    """A skipped task whose dependencies can complete again goes back to pending; a blocked gate one
    of whose afterTasks is no longer terminal (re-run, reassessed, unskipped) is judged again once
    they all end again."""
    for task_id in step.index.topological:
        task = step.tasks[task_id]
        if task.status is TaskStatus.SKIPPED and _unreachable_because(step, task_id) is None:
            step.put(replace(task, status=TaskStatus.PENDING, error=None, finished_at=None))
    for i, gate in enumerate(step.gates):
        if gate is GateStatus.BLOCKED and any(
            step.tasks[t].status not in TERMINAL_TASK_STATUSES for t in step.index.gate_after[i]
        ):
            step.gates[i] = GateStatus.PENDING


# --------------------------------------------------------------------------------------------
# Operator commands on one task, and continuing a failed run


def _continue_failed_run(
    state: RunState, event: ResumeRequested | TaskRetryRequested | ReassessRequested, now: datetime
) -> Decision:
    """A run that failed because tasks failed (``CONTINUABLE_FAILURES``) becomes active again: a
    resume with ``retryFailed`` re-runs every failed task (and the failed or low-scoring afterTasks
    of blocked gates), the retry of one task only that one; completed tasks keep their outputs and
    are not run again, and what was skipped because of the re-run tasks is pending again. The
    deadline timer is armed again (a run whose deadline has passed is not continued)."""
    if isinstance(event, ResumeRequested) and not event.retry_failed:
        return _ignored(state, "a failed run is continued only with retryFailed=true (it re-runs the failed tasks)")
    if state.failure_reason not in CONTINUABLE_FAILURES:
        return _ignored(
            state,
            f"the run ended {state.failure_reason}; only a run that failed because tasks failed or were "
            "cancelled can be continued (execute the mission to start a new run)",
        )
    deadline = run_deadline(state.spec, state.started_at) if state.started_at is not None else None
    if deadline is not None and deadline <= now:
        return _ignored(state, f"the run's deadline {format_timestamp(deadline)} has passed")
    if isinstance(event, ResumeRequested) and not (
        any(t.status is TaskStatus.FAILED for t in state.tasks.values())
        or any(g is GateStatus.BLOCKED for g in state.gates)
    ):
        return _ignored(
            state, "no task of the run failed, so there is nothing to re-run (retry a cancelled task by itself)"
        )
    step = _Step(state, now)
    if isinstance(event, ReassessRequested):
        why = _why_not_reassessed(state, event.task_id)
        if why is not None:
            return _ignored(state, why)
        _reactivate(step)
        _assess_again(step, step.tasks[event.task_id])
    elif isinstance(event, TaskRetryRequested):
        causes = _retry_causes(step, event.task_id)
        if isinstance(causes, str):
            return _ignored(state, causes)
        _reactivate(step)
        _rerun_tasks(step, causes)
    else:
        _reactivate(step)
        _settle_failures(step, retry_failed=True)
    if deadline is not None:
        step.emit(ScheduleTimer.of(Timer.deadline(), deadline))
    for i, delay in enumerate(step.delays):
        if delay.status is DelayStatus.WAITING and delay.until is not None:
            # disarmed when the run ended (``_finish_when_nothing_left``); a past time fires at once
            step.emit(ScheduleTimer.of(Timer.delay(i), delay.until))
    _settle(step)
    return step.decision()


def _retry_task(state: RunState, event: TaskRetryRequested, now: datetime) -> Decision:
    """The retry of one task of a live run: it (or what it was skipped because of) re-runs with a
    fresh budget as soon as it is ready; nothing else changes."""
    step = _Step(state, now)
    causes = _retry_causes(step, event.task_id)
    if isinstance(causes, str):
        return _ignored(state, causes)
    _rerun_tasks(step, causes)
    _settle(step)
    return step.decision()


def _retry_causes(step: _Step, task_id: str) -> list[str] | str:
    """The tasks a retry of ``task_id`` re-runs (in topological order), or why there are none: the
    task itself when it failed or was cancelled, and every failed or cancelled task upstream of it
    (through dependencies, skipped tasks and unreachable checkpoints) that would keep it from
    running."""
    task = step.tasks.get(task_id)
    if task is None:
        return f"unknown task {task_id!r}"
    if task.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.SKIPPED):
        return f'task "{task.title}" is {task.status.value}; only a failed, cancelled or skipped task can be retried'
    # The task itself, and what upstream of it cannot complete (a task cancelled while its
    # dependency was failing would otherwise be skipped again at once).
    roots: set[str] = {task_id} if task.status is not TaskStatus.SKIPPED else set()
    seen = {task_id}
    todo = [task_id]
    while todo:
        current = todo.pop()
        upstream = list(step.index.dependencies[current])
        for i in step.index.checkpoints_blocking.get(current, ()):
            if step.checkpoints[i] is CheckpointStatus.FAILED:
                label = _label(step.spec.checkpoints[i].name, i)
                return f'task "{task.title}" cannot run in this run: checkpoint {label} timed out'
            if step.checkpoints[i] is CheckpointStatus.PENDING:
                upstream.extend(step.index.checkpoint_after[i])
        for dep in upstream:
            status = step.tasks[dep].status
            if status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
                roots.add(dep)
            if status in _DEAD and dep not in seen:  # (a root's own upstream may be dead too)
                seen.add(dep)
                todo.append(dep)
    if not roots:
        return f'task "{task.title}" was not skipped because of a failed or cancelled task'
    return [t for t in step.index.topological if t in roots]


def _rerun_tasks(step: _Step, task_ids: Iterable[str]) -> None:
    """Failed or cancelled tasks start over with a fresh budget; a blocked gate after one of them is
    judged again, and what was skipped because of them is pending again."""
    rerun = set(task_ids)
    for task_id in step.index.topological:
        if task_id in rerun:
            _give_fresh_budget(step, step.tasks[task_id], ())
    _unskip_reachable_tasks(step)
    step.reachability_changed = True


def _reassess(state: RunState, event: ReassessRequested, now: datetime) -> Decision:
    """The last output of a task that failed its assessment is scored again (``AssessTask`` for
    the same attempt): the task is ``assessing``, that verdict no longer counts against its retry
    budget, and what was skipped because of it waits for the new verdict."""
    why = _why_not_reassessed(state, event.task_id)
    if why is not None:
        return _ignored(state, why)
    step = _Step(state, now)
    _assess_again(step, step.tasks[event.task_id])
    _settle(step)
    return step.decision()


def _why_not_reassessed(state: RunState, task_id: str) -> str | None:
    """None when ``task_id`` is a failed task whose last attempt failed its assessment."""
    task = state.tasks.get(task_id)
    if task is None:
        return f"unknown task {task_id!r}"
    assessed = task.score is not None or bool(task.criteria) or (task.error or "").startswith("assessment")
    if task.status is not TaskStatus.FAILED or not assessed or task.output is None:
        return (
            f'task "{task.title}" is {task.status.value}; only a failed task whose last attempt failed its '
            "assessment can be reassessed (retry it to run the agent again)"
        )
    return None


def _assess_again(step: _Step, task: TaskState) -> None:
    step.put(
        replace(
            task,
            status=TaskStatus.ASSESSING,
            failed_attempts=max(0, task.failed_attempts - 1),
            error=None,
            finished_at=None,
        )
    )
    step.emit(AssessTask(task.task_id, task.attempt, task.output or ""))
    _unskip_reachable_tasks(step)


def _cancel_task(state: RunState, event: TaskCancelRequested, now: datetime) -> Decision:
    """An operator's cancel stops the task's attempt at once (its agent, or its judge), disarms its
    timers and marks it cancelled; its dependents are skipped while independent branches go on. A
    cancelled task that awaited approval no longer holds the run paused."""
    task = state.tasks.get(event.task_id)
    if task is None:
        return _ignored(state, f"unknown task {event.task_id!r}")
    if task.status in TERMINAL_TASK_STATUSES:
        return _ignored(state, f'task "{task.title}" is already {task.status.value}')
    step = _Step(state, now)
    if task.status in _IN_FLIGHT:
        step.emit(CancelTask(task.task_id, task.attempt, "cancelled"))
    _disarm_timeout(step, task)
    _disarm_approval(step, task)
    if task.status is TaskStatus.PENDING and task.retry_at is not None:
        step.emit(CancelTimer.of(Timer.retry(task.task_id, task.attempt + 1)))
    step.put(replace(task, status=TaskStatus.CANCELLED, error=CANCELLED_BY_OPERATOR, retry_at=None, finished_at=now))
    _settle(step)
    return step.decision()


# --------------------------------------------------------------------------------------------
# Reviews at checkpoints and approvals, timeouts for people, delays


def _review(state: RunState, event: ReviewSubmitted, now: datetime) -> Decision:
    """A person's decision on what waits for one (every waiting checkpoint and every task awaiting
    approval): approve lets it go on; request changes re-runs the named afterTasks of the waiting
    checkpoints (all of them when none is named) and every task awaiting approval with the
    feedback in their prompts, and the checkpoint is reached again after them; reject fails the
    mission (``rejected``). The decision is recorded on the run and streamed (``review:decided``)."""
    if state.status is not MissionStatus.PAUSED:
        return _ignored(state, f"nothing awaits a review: the run is {state.status.value}")
    waiting = [i for i, c in enumerate(state.checkpoints) if c is CheckpointStatus.WAITING]
    index = state._derived()
    awaiting = [t for t in index.tasks if state.tasks[t].status is TaskStatus.AWAITING_APPROVAL]
    if not waiting and not awaiting:
        return _ignored(state, "nothing awaits a review: the run is paused for a quality gate (resume it)")
    feedback = (event.feedback or "").strip() or None
    if event.decision is ReviewDecision.REQUEST_CHANGES and feedback is None:
        return _ignored(state, "request_changes needs feedback: what should change")
    if event.decision is ReviewDecision.FAIL:
        return _ignored(state, "fail is what a timeout decides; a person approves, requests changes or rejects")
    after = [t for i in waiting for t in index.checkpoint_after[i]]
    redo: list[str] = []
    for title in event.redo:
        task_id = index.id_by_title.get(title)
        if task_id is None or task_id not in after:
            return _ignored(state, f'"{title}" is not an afterTask of a waiting checkpoint, so it cannot be redone')
        redo.append(task_id)
    if event.decision is ReviewDecision.REQUEST_CHANGES and not redo:
        redo = list(dict.fromkeys(after))
    step = _Step(state, now)
    _record_review(
        step,
        Review(
            decision=event.decision,
            at=now,
            reviewer_id=event.reviewer_id,
            reviewer_name=event.reviewer_name,
            feedback=feedback,
            redo=tuple(state.tasks[t].title for t in redo),
            checkpoints=tuple(_label(state.spec.checkpoints[i].name, i) for i in waiting),
            tasks=tuple(state.tasks[t].title for t in awaiting),
        ),
    )
    if event.decision is ReviewDecision.REJECT:
        _stop_run(step, MissionStatus.FAILED, FAILURE_REJECTED)
        return step.decision()
    note = None
    if feedback is not None and event.decision is ReviewDecision.REQUEST_CHANGES:
        who = f" {event.reviewer_name}" if event.reviewer_name else ""
        note = f"The reviewer{who} asked for changes: {feedback}"
    for i in waiting:
        _disarm_checkpoint(step, i)
        redone = note is not None and any(t in redo for t in index.checkpoint_after[i])
        step.checkpoints[i] = CheckpointStatus.PENDING if redone else CheckpointStatus.APPROVED
    for task_id in redo:
        task = step.tasks[task_id]
        _give_fresh_budget(step, replace(task, review=(*task.review, note or "")), ())
    for task_id in awaiting:
        task = step.tasks[task_id]
        _disarm_approval(step, task)
        notes = (*task.review, note) if note is not None else task.review
        step.put(replace(task, status=TaskStatus.PENDING, error=None, review=notes))
    _lift_pause_with_no_cause_left(step)
    step.reachability_changed = True
    _settle(step)
    return step.decision()


def _record_review(step: _Step, review: Review) -> None:
    step.reviews.append(review)
    step.publish("review:decided", review.to_json())


def _checkpoint_timed_out(state: RunState, event: CheckpointTimedOut, now: datetime) -> Decision:
    """A checkpoint nobody decided within its ``timeout`` does what its ``onTimeout`` says: approve
    (it goes on), reject (the mission fails, ``rejected``) or fail (its blocked tasks are skipped;
    the rest of the run finishes and the mission ends failed)."""
    i = event.checkpoint
    if not 0 <= i < len(state.checkpoints) or state.checkpoints[i] is not CheckpointStatus.WAITING:
        return _ignored(state, f"checkpoint #{i + 1} is not waiting")
    checkpoint = state.spec.checkpoints[i]
    choice = ReviewDecision(checkpoint.on_timeout or DEFAULT_ON_TIMEOUT)
    step = _Step(state, now)
    _record_review(
        step,
        Review(
            decision=choice,
            at=now,
            feedback=f"no decision within {checkpoint.timeout:g} seconds" if checkpoint.timeout else None,
            checkpoints=(_label(checkpoint.name, i),),
            timed_out=True,
        ),
    )
    if choice is ReviewDecision.REJECT:
        _stop_run(step, MissionStatus.FAILED, FAILURE_REJECTED)
        return step.decision()
    approved = choice is ReviewDecision.APPROVE
    step.checkpoints[i] = CheckpointStatus.APPROVED if approved else CheckpointStatus.FAILED
    _lift_pause_with_no_cause_left(step)
    step.reachability_changed = True
    _settle(step)
    return step.decision()


def _approval_timed_out(state: RunState, event: ApprovalTimedOut, now: datetime) -> Decision:
    """A side-effect approval nobody decided in time does what its ``onApprovalTimeout`` says:
    approve (the task runs again), reject (the mission fails, ``rejected``) or fail (the task fails
    without being re-run, its dependents are skipped)."""
    task = state.tasks.get(event.task_id)
    if task is None or task.status is not TaskStatus.AWAITING_APPROVAL or task.attempt != event.attempt:
        return _ignored(state, f"no approval of attempt {event.attempt} of task {event.task_id!r} is waiting")
    waits = state.spec.approval_timeout_of(state.task_spec(task.task_id))
    seconds, on_timeout = waits if waits is not None else (0.0, DEFAULT_ON_TIMEOUT)
    choice = ReviewDecision(on_timeout)
    step = _Step(state, now)
    _record_review(
        step,
        Review(
            decision=choice,
            at=now,
            feedback=f"no decision within {seconds:g} seconds",
            tasks=(task.title,),
            timed_out=True,
        ),
    )
    if choice is ReviewDecision.REJECT:
        _stop_run(step, MissionStatus.FAILED, FAILURE_REJECTED)
        return step.decision()
    if choice is ReviewDecision.APPROVE:
        step.put(replace(task, status=TaskStatus.PENDING, error=None))
    else:
        error = f"approval timed out after {seconds:g} seconds; {UNKNOWN_OUTCOME_ERROR}"
        _publish_error(step, ErrorCode.OUTCOME_UNKNOWN, error, task)  # (as a person's "do not re-run")
        step.put(replace(task, status=TaskStatus.FAILED, error=error, finished_at=now))
    _lift_pause_with_no_cause_left(step)
    step.reachability_changed = True
    _settle(step)
    return step.decision()


def _delay_elapsed(state: RunState, event: DelayElapsed, now: datetime) -> Decision:
    """A waiting delay whose time is up lets its blocked tasks start (``delay:ended``)."""
    i = event.delay
    if not 0 <= i < len(state.delays) or state.delays[i].status is not DelayStatus.WAITING:
        return _ignored(state, f"delay #{i + 1} is not waiting")
    step = _Step(state, now)
    step.delays[i] = replace(state.delays[i], status=DelayStatus.ELAPSED)
    delay = state.spec.delays[i]
    step.publish("delay:ended", {"delay": i, "name": delay.name, "blocksTasks": list(delay.blocks_tasks)})
    _settle(step)
    return step.decision()


# --------------------------------------------------------------------------------------------
# Changing the tasks of a running run


def _changed_spec(base: MissionSpec, tasks: tuple[TaskSpec, ...]) -> tuple[MissionSpec, _SpecIndex] | str:
    spec = replace(base, tasks=tasks)
    try:
        return spec, _index_spec(spec)
    except ValueError as exc:
        return f"the change would break the mission: {exc}"


def _not_started(task: TaskState | None) -> bool:
    return task is not None and task.status is TaskStatus.PENDING and task.attempt == 0


def _add_task(state: RunState, event: TaskAdded, now: datetime) -> Decision:
    """An added task joins the live run as pending and starts as soon as it is ready."""
    task_id = _require_id(event.task)
    if task_id in state.tasks:
        return _ignored(state, f"task {task_id!r} is already part of the run")
    changed = _changed_spec(state.spec, (*state.spec.tasks, event.task))
    if isinstance(changed, str):
        return _ignored(state, changed)
    step = _Step(state, now)
    step.change_spec(*changed)
    step.put(TaskState(task_id=task_id, title=event.task.title, status=TaskStatus.PENDING))
    _settle(step)
    return step.decision()


def _update_task(state: RunState, event: TaskUpdated, now: datetime) -> Decision:
    """Only a task that never started may change."""
    task_id = _require_id(event.task)
    current = state.tasks.get(task_id)
    if current is None or not _not_started(current):
        return _ignored(state, f"task {task_id!r} is not a pending task that never started")
    old = state._derived().tasks[task_id]
    if old == event.task:
        return _ignored(state, f"task {task_id!r} is unchanged")
    tasks = tuple(event.task if t.id == task_id else t for t in state.spec.tasks)
    changed = _changed_spec(state.spec, tasks)
    if isinstance(changed, str):
        return _ignored(state, changed)
    step = _Step(state, now)
    step.change_spec(*changed)
    step.put(replace(current, title=event.task.title), announce=False)
    _settle(step)
    return step.decision()


def _remove_task(state: RunState, event: TaskRemoved, now: datetime) -> Decision:
    """Only a task that never started may be removed, and only while nothing refers to it."""
    current = state.tasks.get(event.task_id)
    if current is None or not _not_started(current):
        return _ignored(state, f"task {event.task_id!r} is not a pending task that never started")
    changed = _changed_spec(state.spec, tuple(t for t in state.spec.tasks if t.id != event.task_id))
    if isinstance(changed, str):
        return _ignored(state, changed)
    step = _Step(state, now)
    step.change_spec(*changed)
    step.drop(event.task_id)
    _settle(step)
    return step.decision()


# --------------------------------------------------------------------------------------------
# Spec index and small helpers


def _require_id(task: TaskSpec) -> str:
    if task.id is None:
        raise ValueError(f'task "{task.title}" has no id; a running spec needs task ids')
    return task.id


def _index_spec(spec: MissionSpec) -> _SpecIndex:
    """Derive the lookups of a spec; raises ValueError for missing ids, dangling references or cycles."""
    tasks: dict[str, TaskSpec] = {}
    id_by_title: dict[str, str] = {}
    for task in spec.tasks:
        task_id = _require_id(task)
        if task_id in tasks:
            raise ValueError(f"task id {task_id!r} is used twice")
        if task.title in id_by_title:
            raise ValueError(f'task title "{task.title}" is used twice')
        tasks[task_id] = task
        id_by_title[task.title] = task_id

    def resolve(titles: Iterable[str], where: str) -> tuple[str, ...]:
        ids: list[str] = []
        for title in titles:
            if title not in id_by_title:
                raise ValueError(f'{where} refers to unknown task "{title}"')
            if id_by_title[title] not in ids:
                ids.append(id_by_title[title])
        return tuple(ids)

    dependencies = {tid: resolve(t.depends_on, f'task "{t.title}"') for tid, t in tasks.items()}
    dependents: dict[str, list[str]] = {tid: [] for tid in tasks}
    successors: dict[str, set[str]] = {tid: set() for tid in tasks}
    for tid, deps in dependencies.items():
        for dep in deps:
            dependents[dep].append(tid)
            successors[dep].add(tid)

    gate_after = tuple(
        resolve(g.after_tasks, f"quality gate {_label(g.name, i)}") for i, g in enumerate(spec.quality_gates)
    )
    gate_blocks = tuple(
        resolve(g.blocks_tasks, f"quality gate {_label(g.name, i)}") for i, g in enumerate(spec.quality_gates)
    )
    checkpoint_after = tuple(
        resolve(c.after_tasks, f"checkpoint {_label(c.name, i)}") for i, c in enumerate(spec.checkpoints)
    )
    checkpoint_blocks = tuple(
        resolve(c.blocks_tasks, f"checkpoint {_label(c.name, i)}") for i, c in enumerate(spec.checkpoints)
    )
    delay_after = tuple(resolve(d.after_tasks, f"delay {_label(d.name, i)}") for i, d in enumerate(spec.delays))
    delay_blocks = tuple(resolve(d.blocks_tasks, f"delay {_label(d.name, i)}") for i, d in enumerate(spec.delays))
    gates_blocking: dict[str, list[int]] = {}
    checkpoints_blocking: dict[str, list[int]] = {}
    delays_blocking: dict[str, list[int]] = {}
    for kind, afters, blocks in (
        (gates_blocking, gate_after, gate_blocks),
        (checkpoints_blocking, checkpoint_after, checkpoint_blocks),
        (delays_blocking, delay_after, delay_blocks),
    ):
        for i, (after, blocked) in enumerate(zip(afters, blocks, strict=False)):
            for tid in blocked:
                kind.setdefault(tid, []).append(i)
                for before in after:
                    successors[before].add(tid)

    position = {tid: i for i, tid in enumerate(tasks)}
    indegree = dict.fromkeys(tasks, 0)
    for succ in successors.values():
        for tid in succ:
            indegree[tid] += 1
    heap = [position[tid] for tid, n in indegree.items() if n == 0]
    heapq.heapify(heap)
    ids = list(tasks)
    order: list[str] = []
    while heap:
        tid = ids[heapq.heappop(heap)]
        order.append(tid)
        for succ_id in successors[tid]:
            indegree[succ_id] -= 1
            if indegree[succ_id] == 0:
                heapq.heappush(heap, position[succ_id])
    if len(order) != len(tasks):
        stuck = sorted((tasks[t].title for t, n in indegree.items() if n > 0))
        raise ValueError("dependency cycle among tasks: " + ", ".join(f'"{t}"' for t in stuck))

    return _SpecIndex(
        spec=spec,
        tasks=tasks,
        position=position,
        id_by_title=id_by_title,
        dependencies=dependencies,
        dependents={tid: tuple(d) for tid, d in dependents.items()},
        topological=tuple(order),
        gate_after=gate_after,
        checkpoint_after=checkpoint_after,
        gates_blocking={tid: tuple(v) for tid, v in gates_blocking.items()},
        checkpoints_blocking={tid: tuple(v) for tid, v in checkpoints_blocking.items()},
        agents=spec.agents_by_name(),
        delay_after=delay_after,
        delays_blocking={tid: tuple(v) for tid, v in delays_blocking.items()},
    )


def _label(name: str | None, i: int) -> str:
    return f'"{name}"' if name else f"#{i + 1}"


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")


def _format_time(value: datetime | None) -> str | None:
    return format_timestamp(value) if value is not None else None


def _parse_time(value: str | None) -> datetime | None:
    return parse_timestamp(value) if value is not None else None
