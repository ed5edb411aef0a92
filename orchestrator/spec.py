"""The mission document as immutable values.

``MissionSpec.from_document`` turns a mission document (the camelCase JSON the API accepts and
serves, already type-checked by the API schemas) into frozen dataclasses; ``to_document`` turns
it back. The round trip is lossless for every field the API accepts, so the stored document and
the spec never disagree. Nothing here validates cross references: that is ``validation``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Final

DEFAULT_QUALITY_THRESHOLD = 3.0
DEFAULT_MAX_RETRIES = 2
# What happens when a person does not answer in time (a checkpoint's ``onTimeout``, an approval's
# ``onApprovalTimeout``): "approve" goes on, "reject" fails the mission (reason "rejected"), and
# "fail" fails only what waited (the checkpoint's blocked tasks are skipped, the task awaiting
# approval fails) while the rest of the run finishes.
ON_TIMEOUT_CHOICES: Final = ("approve", "reject", "fail")
DEFAULT_ON_TIMEOUT: Final = "fail"


@dataclass(frozen=True)
class Expectation:
    """One expectation of a task: a judge ``criterion`` or a deterministic check."""

    type: str  # "criterion", "contains", "regex", "json_schema" or "command"
    document: Mapping[str, Any]
    weight: float = 1.0

    @property
    def criterion(self) -> str | None:
        value = self.document.get("criterion")
        return value if isinstance(value, str) else None

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Expectation:
        kind = doc.get("type") or "criterion"
        return cls(type=str(kind), document=dict(doc), weight=float(doc.get("weight", 1.0)))

    def to_document(self) -> dict[str, Any]:
        return dict(self.document)


@dataclass(frozen=True)
class RetryPolicy:
    fallback_agent: str | None = None
    escalate_model: str | None = None
    escalate_after: int | None = None
    backoff: float = 0.0
    approval_timeout: float | None = None  # seconds a side-effect approval may wait for a person
    on_approval_timeout: str | None = None  # one of ON_TIMEOUT_CHOICES (None: the mission's)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> RetryPolicy:
        after = doc.get("escalateAfter")
        approval = doc.get("approvalTimeout")
        return cls(
            fallback_agent=doc.get("fallbackAgent"),
            escalate_model=doc.get("escalateModel"),
            escalate_after=int(after) if after is not None else None,
            backoff=float(doc.get("backoff") or 0.0),
            approval_timeout=float(approval) if approval is not None else None,
            on_approval_timeout=doc.get("onApprovalTimeout"),
        )

    def to_document(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.fallback_agent is not None:
            out["fallbackAgent"] = self.fallback_agent
        if self.escalate_model is not None:
            out["escalateModel"] = self.escalate_model
        if self.escalate_after is not None:
            out["escalateAfter"] = self.escalate_after
        if self.backoff:
            out["backoff"] = self.backoff
        if self.approval_timeout is not None:
            out["approvalTimeout"] = self.approval_timeout
        if self.on_approval_timeout is not None:
            out["onApprovalTimeout"] = self.on_approval_timeout
        return out


@dataclass(frozen=True)
class TaskSpec:
    title: str
    description: str
    assign_to: str
    id: str | None = None
    depends_on: tuple[str, ...] = ()
    expectations: tuple[Expectation, ...] = ()
    expected_outcomes: tuple[Mapping[str, Any], ...] = ()
    max_retries: int = DEFAULT_MAX_RETRIES
    priority: int = 0
    side_effects: bool = False
    timeout: float | None = None
    retry_policy: RetryPolicy | None = None

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> TaskSpec:
        policy = doc.get("retryPolicy")
        timeout = doc.get("timeout")
        return cls(
            id=doc.get("id"),
            title=doc["title"],
            description=doc.get("description", ""),
            assign_to=doc["assignTo"],
            depends_on=tuple(doc.get("dependsOn") or ()),
            expectations=tuple(Expectation.from_document(e) for e in doc.get("expectations") or ()),
            expected_outcomes=tuple(dict(o) for o in doc.get("expectedOutcomes") or ()),
            max_retries=int(doc.get("maxRetries", DEFAULT_MAX_RETRIES)),
            priority=int(doc.get("priority", 0)),
            side_effects=bool(doc.get("sideEffects", False)),
            timeout=float(timeout) if timeout is not None else None,
            retry_policy=RetryPolicy.from_document(policy) if policy is not None else None,
        )

    def to_document(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.id is not None:
            out["id"] = self.id
        out["title"] = self.title
        out["description"] = self.description
        out["assignTo"] = self.assign_to
        if self.depends_on:
            out["dependsOn"] = list(self.depends_on)
        if self.expectations:
            out["expectations"] = [e.to_document() for e in self.expectations]
        if self.expected_outcomes:
            out["expectedOutcomes"] = [dict(o) for o in self.expected_outcomes]
        out["maxRetries"] = self.max_retries
        out["priority"] = self.priority
        out["sideEffects"] = self.side_effects
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.retry_policy is not None:
            out["retryPolicy"] = self.retry_policy.to_document()
        return out


@dataclass(frozen=True)
class AgentSpec:
    """An agent of the team. ``config`` keeps every field of its document (script, prompts, ...)."""

    name: str
    model: str
    role: str = ""
    max_concurrency: int | None = None
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0]

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> AgentSpec:
        limit = doc.get("maxConcurrency")
        return cls(
            name=doc["name"],
            model=doc["model"],
            role=doc.get("role", ""),
            max_concurrency=int(limit) if limit is not None else None,
            config=dict(doc),
        )

    def to_document(self) -> dict[str, Any]:
        return dict(self.config)


@dataclass(frozen=True)
class TeamSpec:
    name: str
    volatile: bool = False
    agents: tuple[AgentSpec, ...] = ()
    # The agents a run took from its project (reusable agents named by the mission, not defined by
    # its team): set by the shell when a run starts, never by a client.
    project_agents: tuple[str, ...] = ()

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> TeamSpec:
        return cls(
            name=doc.get("name", ""),
            volatile=bool(doc.get("volatile", False)),
            agents=tuple(AgentSpec.from_document(a) for a in doc.get("agents") or ()),
            project_agents=tuple(doc.get("projectAgents") or ()),
        )

    def to_document(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "volatile": self.volatile,
            "agents": [a.to_document() for a in self.agents],
        }
        if self.project_agents:
            out["projectAgents"] = list(self.project_agents)
        return out

    def is_reusable(self, agent: str) -> bool:
        """Whether ``agent`` is one of the project's reusable agents (a non-volatile team's, or one the
        run took from the project), rather than one that exists for this run only."""
        return not self.volatile or agent in self.project_agents


def _placement_document(
    name: str | None, after_tasks: tuple[str, ...], blocks_tasks: tuple[str, ...]
) -> dict[str, Any]:
    """What a gate and a delay write first: their name (if any) and where they stand in the graph."""
    out: dict[str, Any] = {} if name is None else {"name": name}
    out["afterTasks"] = list(after_tasks)
    out["blocksTasks"] = list(blocks_tasks)
    return out


@dataclass(frozen=True)
class GateSpec:
    after_tasks: tuple[str, ...]
    blocks_tasks: tuple[str, ...]
    min_score: float | None = None
    require_all_passed: bool = False
    name: str | None = None

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> GateSpec:
        score = doc.get("minScore")
        return cls(
            name=doc.get("name"),
            after_tasks=tuple(doc.get("afterTasks") or ()),
            blocks_tasks=tuple(doc.get("blocksTasks") or ()),
            min_score=float(score) if score is not None else None,
            require_all_passed=bool(doc.get("requireAllPassed", False)),
        )

    def to_document(self) -> dict[str, Any]:
        out = _placement_document(self.name, self.after_tasks, self.blocks_tasks)
        if self.min_score is not None:
            out["minScore"] = self.min_score
        out["requireAllPassed"] = self.require_all_passed
        return out


@dataclass(frozen=True)
class CheckpointSpec:
    after_tasks: tuple[str, ...]
    blocks_tasks: tuple[str, ...] = ()
    message: str = ""
    name: str | None = None
    timeout: float | None = None  # seconds the checkpoint waits for a person once reached
    on_timeout: str | None = None  # one of ON_TIMEOUT_CHOICES (None: DEFAULT_ON_TIMEOUT)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> CheckpointSpec:
        timeout = doc.get("timeout")
        return cls(
            name=doc.get("name"),
            after_tasks=tuple(doc.get("afterTasks") or ()),
            blocks_tasks=tuple(doc.get("blocksTasks") or ()),
            message=doc.get("message", ""),
            timeout=float(timeout) if timeout is not None else None,
            on_timeout=doc.get("onTimeout"),
        )

    def to_document(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.name is not None:
            out["name"] = self.name
        out["afterTasks"] = list(self.after_tasks)
        if self.blocks_tasks:
            out["blocksTasks"] = list(self.blocks_tasks)
        out["message"] = self.message
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.on_timeout is not None:
            out["onTimeout"] = self.on_timeout
        return out


@dataclass(frozen=True)
class DelaySpec:
    """Once every ``after_tasks`` completed, ``blocks_tasks`` wait ``seconds`` before they may start.
    ``duration`` is kept as the document gave it (an ISO 8601 duration or a number of seconds)."""

    after_tasks: tuple[str, ...]
    blocks_tasks: tuple[str, ...]
    duration: str | float
    name: str | None = None

    @property
    def seconds(self) -> float:
        return duration_seconds(self.duration)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> DelaySpec:
        duration = doc["duration"]
        return cls(
            name=doc.get("name"),
            after_tasks=tuple(doc.get("afterTasks") or ()),
            blocks_tasks=tuple(doc.get("blocksTasks") or ()),
            duration=duration if isinstance(duration, str) else float(duration),
        )

    def to_document(self) -> dict[str, Any]:
        out = _placement_document(self.name, self.after_tasks, self.blocks_tasks)
        out["duration"] = self.duration
        return out


# ISO 8601 durations of fixed length: weeks, days, hours, minutes, seconds (``PT10M``, ``P1DT2H``,
# ``PT1.5S``). Years and months have no fixed length, so a delay may not use them. Written out
# here because the core imports only the standard library (and croniter), and this is all of it.
_DURATION = re.compile(
    r"P(?!$)(?:(?P<weeks>\d+(?:\.\d+)?)W)?(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?",
    re.ASCII,
)
_UNIT_SECONDS: Final = {"weeks": 604_800.0, "days": 86_400.0, "hours": 3_600.0, "minutes": 60.0, "seconds": 1.0}


def duration_seconds(value: str | float) -> float:
    """Seconds of a duration: a number of seconds, or an ISO 8601 duration of weeks, days, hours,
    minutes and seconds (``PT10M`` is 600). Raises ValueError for anything else."""
    if not isinstance(value, str):
        return float(value)
    match = _DURATION.fullmatch(value.strip().upper())
    if match is None:
        raise ValueError(
            f"{value!r} is not an ISO 8601 duration of weeks, days, hours, minutes and seconds (e.g. PT10M, P1DT2H)"
        )
    return sum(float(v) * _UNIT_SECONDS[unit] for unit, v in match.groupdict().items() if v is not None)


@dataclass(frozen=True)
class MissionSpec:
    name: str
    tasks: tuple[TaskSpec, ...]
    prompt: str | None = None
    data: Any = None
    team: TeamSpec | None = None
    quality_threshold: float = DEFAULT_QUALITY_THRESHOLD
    deadline: datetime | None = None
    schedule: str | None = None
    timezone: str | None = None
    quality_gates: tuple[GateSpec, ...] = ()
    checkpoints: tuple[CheckpointSpec, ...] = ()
    assessor: Mapping[str, Any] | None = None
    max_concurrency: int | None = None
    end_date: datetime | None = None  # a schedule fires no more after this
    catch_up: str = "skip"  # after downtime: "skip" missed fires, or run the "latest" one once
    deadline_after: float | None = None  # seconds after each run starts
    budget: Mapping[str, Any] | None = None  # {"maxCostUsd": n, "maxTokens": n}
    delays: tuple[DelaySpec, ...] = ()
    approval_timeout: float | None = None  # default for tasks whose retryPolicy sets none
    on_approval_timeout: str | None = None  # one of ON_TIMEOUT_CHOICES (None: DEFAULT_ON_TIMEOUT)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> MissionSpec:
        deadline = doc.get("deadline")
        if isinstance(deadline, str):
            deadline = parse_timestamp(deadline)
        end_date = doc.get("endDate")
        if isinstance(end_date, str):
            end_date = parse_timestamp(end_date)
        deadline_after = doc.get("deadlineAfter")
        approval = doc.get("approvalTimeout")
        team = doc.get("team")
        limit = doc.get("maxConcurrency")
        return cls(
            name=doc["name"],
            prompt=doc.get("prompt"),
            data=doc.get("data"),
            tasks=tuple(TaskSpec.from_document(t) for t in doc.get("tasks") or ()),
            team=TeamSpec.from_document(team) if team is not None else None,
            quality_threshold=float(doc.get("qualityThreshold", DEFAULT_QUALITY_THRESHOLD)),
            deadline=deadline,
            schedule=doc.get("schedule"),
            timezone=doc.get("timezone"),
            quality_gates=tuple(GateSpec.from_document(g) for g in doc.get("qualityGates") or ()),
            checkpoints=tuple(CheckpointSpec.from_document(c) for c in doc.get("checkpoints") or ()),
            assessor=dict(doc["assessor"]) if doc.get("assessor") is not None else None,
            max_concurrency=int(limit) if limit is not None else None,
            end_date=end_date,
            catch_up=str(doc.get("catchUp") or "skip"),
            deadline_after=float(deadline_after) if deadline_after is not None else None,
            budget=dict(doc["budget"]) if doc.get("budget") is not None else None,
            delays=tuple(DelaySpec.from_document(d) for d in doc.get("delays") or ()),
            approval_timeout=float(approval) if approval is not None else None,
            on_approval_timeout=doc.get("onApprovalTimeout"),
        )

    def to_document(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.prompt is not None:
            out["prompt"] = self.prompt
        if self.data is not None:
            out["data"] = self.data
        out["qualityThreshold"] = self.quality_threshold
        if self.deadline is not None:
            out["deadline"] = format_timestamp(self.deadline)
        if self.schedule is not None:
            out["schedule"] = self.schedule
        if self.timezone is not None:
            out["timezone"] = self.timezone
        if self.team is not None:
            out["team"] = self.team.to_document()
        if self.quality_gates:
            out["qualityGates"] = [g.to_document() for g in self.quality_gates]
        if self.checkpoints:
            out["checkpoints"] = [c.to_document() for c in self.checkpoints]
        if self.assessor is not None:
            out["assessor"] = dict(self.assessor)
        if self.max_concurrency is not None:
            out["maxConcurrency"] = self.max_concurrency
        if self.end_date is not None:
            out["endDate"] = format_timestamp(self.end_date)
        if self.catch_up != "skip":
            out["catchUp"] = self.catch_up
        if self.deadline_after is not None:
            out["deadlineAfter"] = self.deadline_after
        if self.budget is not None:
            out["budget"] = dict(self.budget)
        if self.delays:
            out["delays"] = [d.to_document() for d in self.delays]
        if self.approval_timeout is not None:
            out["approvalTimeout"] = self.approval_timeout
        if self.on_approval_timeout is not None:
            out["onApprovalTimeout"] = self.on_approval_timeout
        out["tasks"] = [t.to_document() for t in self.tasks]
        return out

    def approval_timeout_of(self, task: TaskSpec) -> tuple[float, str] | None:
        """How long a side-effect approval of ``task`` waits, and what then happens: the task's
        ``retryPolicy`` first, else the mission's default; None when it waits for ever."""
        policy = task.retry_policy
        seconds = policy.approval_timeout if policy is not None and policy.approval_timeout is not None else None
        if seconds is None:
            seconds = self.approval_timeout
        if seconds is None:
            return None
        choice = (policy.on_approval_timeout if policy is not None else None) or self.on_approval_timeout
        return seconds, choice or DEFAULT_ON_TIMEOUT

    def agents_by_name(self) -> dict[str, AgentSpec]:
        return {a.name: a for a in self.team.agents} if self.team is not None else {}

    @cached_property
    def shared_agent_limits(self) -> Mapping[str, int]:
        """The reusable agents with a ``maxConcurrency``, by name: their limit holds across every run
        of the project (the shell leases their slots), where a volatile agent's holds in its run only.
        Empty for most missions, so they pay nothing for it (computed once per spec object)."""
        team = self.team
        if team is None:
            return {}
        return {
            a.name: max(1, a.max_concurrency)
            for a in team.agents
            if a.max_concurrency is not None and team.is_reusable(a.name)
        }

    def task_by_title(self) -> dict[str, TaskSpec]:
        return {t.title: t for t in self.tasks}


def parse_timestamp(text: str) -> datetime:
    """Parse an ISO 8601 timestamp; a value without an offset is taken as UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def format_timestamp(value: datetime) -> str:
    """UTC, second precision unless sub-second, with a trailing ``Z``: ``2026-04-01T00:00:00Z``."""
    text = value.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")
