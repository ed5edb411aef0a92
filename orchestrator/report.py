"""What a person reads about a run: each attempt's phases, whether it escalated, a run's totals and
average score, and what a paused run waits for.

Guarantees:

* Pure arithmetic over what the shell read (no I/O, no clock: ``now`` is an argument).
* The average score of a run is the mean of the scores its tasks hold (the latest attempt's), over
  the scored tasks only, as quality gates average (``engine._gate_verdict``): an unscored task
  neither helps nor hurts it, and a run without a scored task has no average (``None``), not 0.
* A duration is never negative and never invented: a phase whose start or end is unknown has no
  duration (``None``); a clock step backwards between two processes counts as 0.
* Totals add exactly the per-task lines: the run's tokens, cost and attempts are their sums, and
  its tasks by status count every task once, with every status a run task can have present (0 when
  none), so a client can read any key.
* What a paused run waits for is read from the run's own state: the checkpoints ``waiting``, the
  gates ``blocked`` (with the score of each of their afterTasks against ``minScore``), the tasks
  ``awaiting_approval``. A cause the state no longer holds is not reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from orchestrator.spec import AgentSpec, TaskSpec
from orchestrator.vocabulary import CheckpointStatus, GateStatus, TaskStatus

# Every status a task of a run can have (``draft`` is for a mission that is not running).
RUN_TASK_STATUSES = tuple(s.value for s in TaskStatus if s is not TaskStatus.DRAFT)
SCORE_DIGITS = 4  # (as ``workers.execution.assessment`` rounds a task's weighted score)
COST_DIGITS = 6  # (as ``workers.store.usage.Totals.to_json`` rounds a cost)


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    """``end - start`` in seconds (milliseconds kept), ``None`` when either is unknown, 0 when the
    end is before the start."""
    if start is None or end is None:
        return None
    return round(max(0.0, (end - start).total_seconds()), 3)


@dataclass(frozen=True)
class AttemptTimes:
    """When one attempt was queued, claimed by a worker (its agent started), handed to its judge
    (``None`` without an assessment) and finished (``None`` while it is queued, running or being
    assessed)."""

    queued_at: datetime | None
    started_at: datetime | None
    assessing_at: datetime | None
    finished_at: datetime | None

    def phases(self) -> dict[str, float | None]:
        """The seconds of each phase, and of the whole attempt from its start (API keys)."""
        agent_end = self.assessing_at or self.finished_at
        return {
            "queueSeconds": seconds_between(self.queued_at, self.started_at),
            "agentSeconds": seconds_between(self.started_at, agent_end),
            "assessmentSeconds": seconds_between(self.assessing_at, self.finished_at),
            "durationSeconds": seconds_between(self.started_at, self.finished_at),
        }


def escalation(
    task: TaskSpec, agents: Mapping[str, AgentSpec], agent: str | None, model: str | None
) -> dict[str, bool]:
    """Whether an attempt that ran ``agent`` with ``model`` was escalated by the task's retry
    policy: a fallback agent instead of ``assignTo``, and/or the policy's ``escalateModel`` instead
    of the agent's own model (``engine.assignment`` picks them)."""
    policy = task.retry_policy
    fallback = agent is not None and agent != task.assign_to
    own = agents.get(agent or "")
    escalated_model = (
        policy is not None
        and policy.escalate_model is not None
        and model == policy.escalate_model
        and (own is None or own.model != policy.escalate_model)
    )
    return {"escalated": fallback or escalated_model, "fallbackAgent": fallback, "escalatedModel": escalated_model}


@dataclass(frozen=True)
class AttemptUsage:
    """What one attempt adds to its task's line: its tokens and cost (its agent's and its judge's),
    when it was queued and claimed, and when it ended (its verdict, else its agent's end; ``None``
    while it is queued or running)."""

    tokens_in: int
    tokens_out: int
    cost_usd: float
    queued_at: datetime | None
    claimed_at: datetime | None
    ended_at: datetime | None


@dataclass(frozen=True)
class TaskLine:
    """One task of a run as the report shows it: its state in the run and what its attempts spent."""

    task_id: str
    title: str
    status: str
    attempts: int = 0
    score: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    first_queued_at: datetime | None = None  # the first attempt's queue time
    last_ended_at: datetime | None = None  # the latest end of any of its attempts
    work_seconds: float = 0.0  # the agents' and judges' time, summed over its attempts

    def plus(self, usage: AttemptUsage) -> TaskLine:
        """The line with one more attempt: its tokens and cost added, its queue time and end taken
        when earlier or later, and its work (claim to end, never negative; none while it has not
        both) added."""
        queued = [t for t in (self.first_queued_at, usage.queued_at) if t is not None]
        ended = [t for t in (self.last_ended_at, usage.ended_at) if t is not None]
        work = 0.0
        if usage.claimed_at is not None and usage.ended_at is not None:
            work = max(0.0, (usage.ended_at - usage.claimed_at).total_seconds())
        return replace(
            self,
            attempts=self.attempts + 1,
            tokens_in=self.tokens_in + usage.tokens_in,
            tokens_out=self.tokens_out + usage.tokens_out,
            cost_usd=self.cost_usd + usage.cost_usd,
            first_queued_at=min(queued, default=None),
            last_ended_at=max(ended, default=None),
            work_seconds=self.work_seconds + work,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.task_id,
            "title": self.title,
            "status": self.status,
            "attempts": self.attempts,
            "score": self.score,
            "durationSeconds": seconds_between(self.first_queued_at, self.last_ended_at),
            "workSeconds": round(self.work_seconds, 3),
            "tokensIn": self.tokens_in,
            "tokensOut": self.tokens_out,
            "costUsd": round(self.cost_usd, COST_DIGITS),
        }


def average_score(scores: Iterable[float | None]) -> float | None:
    """The mean of the scores given, ``None`` ones left out; ``None`` when none is left."""
    known = [s for s in scores if s is not None]
    return round(sum(known) / len(known), SCORE_DIGITS) if known else None


def run_summary(
    tasks: Sequence[TaskLine], started_at: datetime | None, finished_at: datetime | None, now: datetime
) -> dict[str, Any]:
    """A run's totals over its task lines (API keys): its duration (until ``now`` while it has not
    finished), its tasks by status, attempts, tokens, cost and average score."""
    by_status = dict.fromkeys(RUN_TASK_STATUSES, 0)
    for task in tasks:
        by_status[task.status] = by_status.get(task.status, 0) + 1
    scored = [t.score for t in tasks if t.score is not None]
    return {
        "durationSeconds": seconds_between(started_at, finished_at or now),
        "averageScore": average_score(scored),
        "totals": {
            "tasks": len(tasks),
            "tasksByStatus": by_status,
            "scoredTasks": len(scored),
            "attempts": sum(t.attempts for t in tasks),
            "tokensIn": sum(t.tokens_in for t in tasks),
            "tokensOut": sum(t.tokens_out for t in tasks),
            "costUsd": round(sum(t.cost_usd for t in tasks), COST_DIGITS),
            "workSeconds": round(sum(t.work_seconds for t in tasks), 3),
        },
    }


def waiting_for(
    header: Mapping[str, Any],
    gates: Sequence[Mapping[str, Any]],
    checkpoints: Sequence[Mapping[str, Any]],
    tasks: Iterable[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """What a paused run waits for, one item per cause (API keys).

    ``header`` is the run's ``RunState.header_json()`` (its gate and checkpoint statuses), ``gates``
    and ``checkpoints`` the spec's documents in order, ``tasks`` ``TaskState.to_json()`` documents:
    at least those awaiting approval and the afterTasks of the blocked gates (others are ignored).
    """
    by_title = {t["title"]: t for t in tasks}
    items: list[dict[str, Any]] = []
    gate_statuses = list(header.get("gates") or ())
    for i, gate in enumerate(gates):
        if i >= len(gate_statuses) or gate_statuses[i] != GateStatus.BLOCKED.value:
            continue
        after = [by_title.get(title) for title in gate.get("afterTasks") or ()]
        after_lines = [
            {
                "id": t.get("taskId") if t else None,
                "title": title,
                "status": t.get("status") if t else None,
                "score": t.get("score") if t else None,
            }
            for title, t in zip(gate.get("afterTasks") or (), after, strict=True)
        ]
        items.append(
            {
                "kind": "quality_gate",
                "index": i,
                "name": gate.get("name"),
                "minScore": gate.get("minScore"),
                "requireAllPassed": bool(gate.get("requireAllPassed", False)),
                "score": average_score(line["score"] for line in after_lines),
                "afterTasks": after_lines,
                "blocksTasks": list(gate.get("blocksTasks") or ()),
            }
        )
    checkpoint_statuses = list(header.get("checkpoints") or ())
    for i, checkpoint in enumerate(checkpoints):
        if i >= len(checkpoint_statuses) or checkpoint_statuses[i] != CheckpointStatus.WAITING.value:
            continue
        items.append(
            {
                "kind": "checkpoint",
                "index": i,
                "name": checkpoint.get("name"),
                "message": checkpoint.get("message", ""),
                "afterTasks": list(checkpoint.get("afterTasks") or ()),
                "blocksTasks": list(checkpoint.get("blocksTasks") or ()),
            }
        )
    for task in by_title.values():
        if task.get("status") != TaskStatus.AWAITING_APPROVAL.value:
            continue
        items.append(
            {
                "kind": "approval",
                "task": {"id": task.get("taskId"), "title": task.get("title"), "attempt": task.get("attempt")},
                "reason": task.get("error"),
            }
        )
    return items
