"""The words the core and the shell share: statuses, groups of statuses, the rules that give an
attempt row its status, and the names timers are stored under.

The shell writes these values to Postgres (``missions.status``, ``runs.status``,
``attempts.status``, ``timers.kind`` and ``timers.key``) and reads them back, so it must agree
with the engine on them exactly. They are spelled once, here, and the engine decides by the same
functions the shell records by, so the two cannot drift apart. Everything here is pure, and
``orchestrator.engine`` re-exports all of it: the shell imports from ``orchestrator.engine``.

Every value is stored. Renaming one needs a migration of the rows that hold it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

# --------------------------------------------------------------------------------------------
# Statuses


class MissionStatus(StrEnum):
    """The status of a mission, and of a run (a run is never ``draft`` or ``scheduled``)."""

    DRAFT = "draft"
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskStatus(StrEnum):
    """The status of a task in a run (``draft``: a task of a mission that is not running)."""

    DRAFT = "draft"
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    ASSESSING = "assessing"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    AWAITING_APPROVAL = "awaiting_approval"


class AttemptStatus(StrEnum):
    """The status of one attempt row (one try of one task), which the shell writes.

    ``queued`` (inserted for ``StartTask``) → ``running`` (claimed by a worker) → the agent's
    result (``attempt_status_after_result``: ``failed``, ``assessing`` or ``completed``) → for
    ``assessing``, the verdict (``attempt_status_after_assessment``: ``completed`` or ``failed``).
    Any live or assessing attempt may instead end ``cancelled`` (``CancelTask``, or the run ended
    before its assessment), and a running one ``lost`` (its worker stopped heart-beating).

    Unlike a task, an attempt never goes back: a failed attempt stays failed while its task
    returns to ``pending`` for the next attempt.
    """

    QUEUED = "queued"
    RUNNING = "running"
    ASSESSING = "assessing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"


class PauseReason(StrEnum):
    CHECKPOINT = "checkpoint"
    QUALITY_GATE = "quality_gate"
    APPROVAL = "approval"


class GateStatus(StrEnum):
    PENDING = "pending"  # not judged yet (or re-opened by a resume with retryFailed)
    PASSED = "passed"
    BLOCKED = "blocked"  # judged and failed; the run is paused until a resume
    OVERRIDDEN = "overridden"  # blocked, then resumed without retryFailed: counts as passed


class CheckpointStatus(StrEnum):
    PENDING = "pending"  # its afterTasks have not all completed (or a reviewer asked to redo them)
    WAITING = "waiting"  # reached; the run is paused until a resume or a review
    APPROVED = "approved"
    FAILED = "failed"  # nobody answered in time and its onTimeout is "fail": its blocked tasks are skipped


class DelayStatus(StrEnum):
    PENDING = "pending"  # its afterTasks have not all completed
    WAITING = "waiting"  # every afterTask completed; its blocked tasks wait until ``until``
    ELAPSED = "elapsed"  # its blocked tasks may start


class ReviewDecision(StrEnum):
    """What a person (or a timeout) decided at a checkpoint or a side-effect approval."""

    APPROVE = "approve"
    REQUEST_CHANGES = "request_changes"
    REJECT = "reject"
    FAIL = "fail"  # only by a timeout whose onTimeout is "fail"


# --------------------------------------------------------------------------------------------
# Groups of statuses

# A run in one of these takes events (``decide`` ignores every event otherwise).
LIVE_RUN_STATUSES: Final = frozenset({MissionStatus.ACTIVE, MissionStatus.PAUSED})
# A mission mirrors its latest run, so a mission in one of these has a live run, and that run
# owns the mission document (it may not be edited or started again until the run ends). The same
# set as ``LIVE_RUN_STATUSES`` on purpose: one rule, named for where the shell asks it.
RUNNING_MISSION_STATUSES: Final = LIVE_RUN_STATUSES
# A run (and a mission mirroring it) in one of these is over for good.
TERMINAL_RUN_STATUSES: Final = frozenset({MissionStatus.COMPLETED, MissionStatus.FAILED, MissionStatus.CANCELLED})
TERMINAL_TASK_STATUSES: Final = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.CANCELLED}
)
# An agent is working on the attempt, or is about to: what ``CancelTask`` stops. An assessing
# attempt is neither live nor terminal: its agent is done, its judge is not.
LIVE_ATTEMPT_STATUSES: Final = frozenset({AttemptStatus.QUEUED, AttemptStatus.RUNNING})
# An attempt in one of these never changes again.
TERMINAL_ATTEMPT_STATUSES: Final = frozenset(
    {AttemptStatus.COMPLETED, AttemptStatus.FAILED, AttemptStatus.CANCELLED, AttemptStatus.LOST}
)


# --------------------------------------------------------------------------------------------
# Rules for an attempt's status


def attempt_status_after_result(*, failed: bool, assessed: bool) -> AttemptStatus:
    """The status of an attempt once its agent reported: ``failed`` when the agent reported an
    error (``TaskFailed``), else ``assessing`` when the task has expectations (``assessed``: the
    engine answers ``TaskFinished`` with ``AssessTask``), else ``completed``.

    The engine moves the task to this same status after ``TaskFinished``; after ``TaskFailed``
    the task is ``pending`` again (a retry) or ``failed``, while the attempt is ``failed``
    either way.
    """
    if failed:
        return AttemptStatus.FAILED
    return AttemptStatus.ASSESSING if assessed else AttemptStatus.COMPLETED


def assessment_passes(score: float | None, error: str | None, threshold: float) -> bool:
    """Whether a verdict completes its task: the judge did not fail and its score is at least
    the mission's quality threshold. A missing score never passes, nor does NaN (it compares
    false). The engine completes the task exactly when this holds (``AssessmentScored``); anything
    else is a failed attempt.
    """
    return error is None and score is not None and score >= threshold


def attempt_status_after_assessment(passed: bool) -> AttemptStatus:
    """The status of an assessed attempt once its verdict is in (``passed`` as by
    ``assessment_passes``): ``completed`` or ``failed``."""
    return AttemptStatus.COMPLETED if passed else AttemptStatus.FAILED


# --------------------------------------------------------------------------------------------
# Timers


class TimerKind(StrEnum):
    """What a timer is for (stored as ``timers.kind``)."""

    RETRY = "retry"  # the backoff before an attempt is over (fires ``RetryDue``)
    TIMEOUT = "timeout"  # a running attempt ran out of time (fires ``TaskTimedOut``)
    DEADLINE = "deadline"  # the run's deadline passed (fires ``DeadlineReached``)
    CHECKPOINT = "checkpoint"  # a waiting checkpoint's timeout (fires ``CheckpointTimedOut``)
    APPROVAL = "approval"  # a side-effect approval's timeout (fires ``ApprovalTimedOut``)
    DELAY = "delay"  # a delay is over (fires ``DelayElapsed``)


# Timers of one checkpoint or delay of the spec, keyed by its position.
_INDEXED: Final = frozenset({TimerKind.CHECKPOINT, TimerKind.DELAY})


# The key of the one deadline timer of a run.
DEADLINE_KEY: Final = "run"


def attempt_key(task_id: str, attempt: int) -> str:
    """The key of a per-attempt timer ("retry" and "timeout" kinds): ``task:attempt``.

    The attempt number comes last and has no ``:``, so a task id containing ``:`` still parses
    back (``Timer.parse`` splits at the last ``:``).
    """
    return f"{task_id}:{attempt}"


@dataclass(frozen=True)
class Timer:
    """One timer of a run, as the engine arms and cancels it: a deadline (no task, no attempt);
    the retry, timeout or approval timeout of one attempt of one task; or the timeout of one
    checkpoint or the end of one delay (``index``: its position in the spec).

    Guarantees: ``kind`` and ``key`` are exactly what the shell stores in ``timers``, and
    ``Timer.parse(t.kind, t.key) == t`` for every timer ``t``; ``parse`` accepts no other text.
    """

    kind: TimerKind
    task_id: str | None = None
    attempt: int | None = None
    index: int | None = None

    def __post_init__(self) -> None:
        if self.kind is TimerKind.DEADLINE:
            if self.task_id is not None or self.attempt is not None or self.index is not None:
                raise ValueError("a deadline timer has no task, no attempt and no index")
        elif self.kind in _INDEXED:
            if self.task_id is not None or self.attempt is not None or self.index is None or self.index < 0:
                raise ValueError(f"a {self.kind} timer needs an index >= 0 and no task or attempt")
        elif self.task_id is None or self.attempt is None or self.attempt < 0 or self.index is not None:
            raise ValueError(f"a {self.kind} timer needs a task id and an attempt number >= 0")

    @classmethod
    def deadline(cls) -> Timer:
        return cls(TimerKind.DEADLINE)

    @classmethod
    def retry(cls, task_id: str, attempt: int) -> Timer:
        """The backoff timer of ``attempt``, the attempt about to start (the failed one + 1)."""
        return cls(TimerKind.RETRY, task_id, attempt)

    @classmethod
    def timeout(cls, task_id: str, attempt: int) -> Timer:
        """The timeout of ``attempt``, armed when it is claimed."""
        return cls(TimerKind.TIMEOUT, task_id, attempt)

    @classmethod
    def approval(cls, task_id: str, attempt: int) -> Timer:
        """How long the side-effect approval of ``attempt`` (its outcome unknown) may wait."""
        return cls(TimerKind.APPROVAL, task_id, attempt)

    @classmethod
    def checkpoint(cls, index: int) -> Timer:
        """How long checkpoint ``index`` may wait for a person once reached."""
        return cls(TimerKind.CHECKPOINT, index=index)

    @classmethod
    def delay(cls, index: int) -> Timer:
        """The end of delay ``index``, armed once its afterTasks completed."""
        return cls(TimerKind.DELAY, index=index)

    @property
    def key(self) -> str:
        """The stored ``timers.key``: ``"run"`` for the deadline, the index for a checkpoint or a
        delay, else ``attempt_key``."""
        if self.index is not None:
            return str(self.index)
        if self.task_id is None or self.attempt is None:
            return DEADLINE_KEY
        return attempt_key(self.task_id, self.attempt)

    @classmethod
    def parse(cls, kind: str, key: str) -> Timer | None:
        """The timer stored as (``kind``, ``key``), or None when no timer is stored so (an
        unknown kind, a deadline key other than ``"run"``, or a key that is not ``task:attempt``
        with the attempt in plain decimal digits, as ``attempt_key`` writes it)."""
        try:
            timer_kind = TimerKind(kind)
        except ValueError:
            return None
        if timer_kind is TimerKind.DEADLINE:
            return cls(timer_kind) if key == DEADLINE_KEY else None
        if timer_kind in _INDEXED:
            return cls(timer_kind, index=int(key)) if _plain_number(key) else None
        task_id, colon, number = key.rpartition(":")
        if not colon or not _plain_number(number):
            return None
        return cls(timer_kind, task_id, int(number))


def _plain_number(text: str) -> bool:
    """Only what str(int) writes: ASCII digits without leading zeros, so a key round-trips
    (``str.isdigit`` alone accepts "²", which int() rejects, and "٣", which it reads as 3)."""
    return text.isascii() and text.isdigit() and str(int(text)) == text
