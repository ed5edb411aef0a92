"""Checks a mission document before it is stored (create and patch).

What this module guarantees:

- ``validate_mission`` never raises on a bad (but well-typed, see ``spec``) mission: every
  problem comes back as a ``Problem`` naming the offending field by its camelCase JSON path
  (``tasks[1].dependsOn[0]``) and the offending value. It reports all problems at once, in
  document order, and the same spec always gives the same list. An empty list means the mission
  can be stored.
- An accepted mission has unique task titles, resolvable references (``dependsOn``, ``assignTo``,
  ``retryPolicy.fallbackAgent``, gate, checkpoint and delay tasks), no dependency cycle, numbers in
  range, a parseable schedule, timezone and delay duration, and every task blocked by a gate,
  checkpoint or delay depends (transitively) on all of that barrier's ``afterTasks``, so a barrier
  can never wait on work that runs after the tasks it holds back.
- A ``command`` expectation or an agent's ``shell`` tool is rejected unless the server allows
  commands: an API key alone must never be enough to run code on a worker.
- What is known at create to fail at run time is rejected at create: a ``deadline`` already in
  the past (when the caller gives ``now``), and a ``criterion`` whose judge is a ``scripted/``
  model without a script that scores every assessment.

Each rule is a small function whose docstring states the one thing it checks; the rule tables
(``MISSION_RULES``, ``TASK_LIST_RULES``, ``TASK_RULES``, ``EXPECTATION_RULES``, ``AGENT_RULES``,
``BARRIER_RULES``) say in which order they run. Graph work is iterative, never recursive: the
cycle search is O(V+E) and gate reachability is one pass with bitsets, so a 10,000-task mission
validates in a fraction of a second.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter  # type: ignore[import-untyped,unused-ignore]

from orchestrator.spec import AgentSpec, Expectation, MissionSpec, TaskSpec, TeamSpec, parse_timestamp

PROVIDERS = ("anthropic", "openai", "scripted")
EXPECTATION_TYPES = ("criterion", "contains", "regex", "json_schema", "command")
AGENT_TOOLS = ("http_request", "read_file", "write_file", "shell")
MIN_SCORE, MAX_SCORE = 1.0, 5.0
MAX_RETRIES_LIMIT = 100
DEFAULT_MAX_TASKS = 10_000

# Bounds on every number of a mission document. Times are added to "now" by the engine and the
# shell (a timeout, a backoff, a deadline): a year fits any later datetime arithmetic until the
# year 9998, so no client value can overflow it. The others keep sums and products far from
# float and 64-bit integer limits.
DAY = 86_400
MAX_TASK_TIMEOUT = 30 * DAY  # seconds an attempt may run
MAX_BACKOFF = DAY  # seconds between two attempts of a task
MAX_COMMAND_TIMEOUT = DAY  # seconds one command expectation may run
MAX_DEADLINE_AFTER = 366 * DAY  # seconds after a run starts
MAX_WAIT = 366 * DAY  # a delay's duration, a checkpoint's or an approval's timeout (seconds)
MAX_PRIORITY = 1_000_000  # |priority|
MAX_WEIGHT = 1_000.0
MAX_CONCURRENCY = 100_000  # a mission's or an agent's maxConcurrency
MAX_BUDGET_USD = 1_000_000.0
MAX_BUDGET_TOKENS = 10**12
MAX_SCRIPT_DELAY = DAY  # a scripted step's delay, seconds
ENDPOINT_FIELDS = ("baseUrl", "apiKeyEnv")
ENDPOINTS_BY_OPERATOR = (
    "is chosen by the server's operator, not by a mission: name one of the operator's provider profiles"
    ' with "profile" instead'
)
COMMANDS_DISABLED = "command expectations are disabled on this server (MISSIONS_ALLOW_COMMANDS=true enables them)"
SHELL_DISABLED = "the shell tool is disabled on this server (MISSIONS_ALLOW_COMMANDS=true enables it)"


@dataclass(frozen=True)
class Problem:
    """One reason a mission document is rejected."""

    field: str  # camelCase JSON path of the offending field, e.g. "tasks[1].dependsOn[0]"
    message: str  # human readable, names the offending value

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def validate_mission(
    spec: MissionSpec,
    *,
    known_agents: Collection[str] = (),
    allow_commands: bool = False,
    max_tasks: int = DEFAULT_MAX_TASKS,
    profiles: Mapping[str, str] | None = None,
    allow_mission_endpoints: bool = False,
    judge_model: str | None = None,
    now: datetime | None = None,
) -> list[Problem]:
    """Every problem of ``spec``, in document order; an empty list means the mission is valid.

    ``known_agents`` are the project's agents kept from earlier non-volatile teams: tasks may be
    assigned to them as well as to the agents of ``spec.team``. ``profiles`` are the operator's
    provider profiles (name -> provider) an agent or the assessor may name with ``profile``;
    ``allow_mission_endpoints`` lets a mission set ``baseUrl``/``apiKeyEnv`` itself (a server whose
    every key holder is trusted with the workers' environment). ``judge_model`` is the server's
    ``MISSIONS_JUDGE_MODEL`` (the judge of a mission without an ``assessor`` model). With ``now``,
    a ``deadline`` must lie after it (create and patch give it; a run that starts after its
    deadline is stopped at once instead).
    """
    context = _Context(
        spec=spec,
        known_agents=frozenset(known_agents),
        allow_commands=allow_commands,
        max_tasks=max_tasks,
        profiles=dict(profiles or {}),
        allow_mission_endpoints=allow_mission_endpoints,
        judge_model=judge_model or None,
        now=now,
    )
    return list(_walk(context))


def validate_agent(
    agent: AgentSpec,
    *,
    allow_commands: bool = False,
    profiles: Mapping[str, str] | None = None,
    allow_mission_endpoints: bool = False,
) -> list[Problem]:
    """Every problem of one reusable agent on its own (``PUT /agents/{name}``): the rules an agent of
    a team must follow, with fields named relative to the agent (``model``, ``tools[0]``)."""
    context = _Context(
        spec=MissionSpec(name="", tasks=(), team=TeamSpec(name="", volatile=True, agents=(agent,))),
        known_agents=frozenset(),
        allow_commands=allow_commands,
        max_tasks=DEFAULT_MAX_TASKS,
        profiles=dict(profiles or {}),
        allow_mission_endpoints=allow_mission_endpoints,
    )
    prefix = "team.agents[0]"
    return [
        Problem(problem.field.removeprefix(prefix).removeprefix(".") or "body", problem.message)
        for rule in AGENT_RULES
        for problem in rule(context, prefix, agent)
    ]


def find_cycle(edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle of ``edges`` (node -> its successors) as ``[a, b, ..., a]``, or None if acyclic.

    Iterative depth-first search, O(V+E), deterministic: roots are tried in mapping order and
    successors in sequence order. A node that only appears as a successor has no successors.
    """
    done: set[str] = set()
    for root in edges:
        if root in done:
            continue
        path = [root]
        on_path = {root: 0}  # node -> its position in path
        pending = [iter(edges.get(root, ()))]
        while path:
            for successor in pending[-1]:
                if successor in on_path:
                    return [*path[on_path[successor] :], successor]
                if successor not in done:
                    on_path[successor] = len(path)
                    path.append(successor)
                    pending.append(iter(edges.get(successor, ())))
                    break
            else:
                finished = path.pop()
                pending.pop()
                del on_path[finished]
                done.add(finished)
    return None


def format_cycle(cycle: Sequence[str]) -> str:
    """``"Run tests" -> "Deploy" -> "Run tests"``."""
    return " -> ".join(_quote(node) for node in cycle)


def validate_schedule(schedule: str, timezone: str | None) -> str | None:
    """None when ``schedule`` and ``timezone`` are usable, else the message of the first problem."""
    return _schedule_problem(schedule) or (_timezone_problem(timezone) if timezone is not None else None)


# --- context -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    """The spec plus the lookups the rules share, each computed once."""

    spec: MissionSpec
    known_agents: frozenset[str]
    allow_commands: bool
    max_tasks: int
    profiles: Mapping[str, str]
    allow_mission_endpoints: bool
    judge_model: str | None = None
    now: datetime | None = None

    @cached_property
    def titles(self) -> frozenset[str]:
        return frozenset(task.title for task in self.spec.tasks)

    @cached_property
    def first_index(self) -> Mapping[str, int]:
        """Title -> index of the first task with that title."""
        index: dict[str, int] = {}
        for i, task in enumerate(self.spec.tasks):
            index.setdefault(task.title, i)
        return index

    @cached_property
    def team_agents(self) -> tuple[str, ...]:
        return tuple(agent.name for agent in self.spec.team.agents) if self.spec.team else ()

    @cached_property
    def first_agent_index(self) -> Mapping[str, int]:
        """Agent name -> index of the first team agent with that name."""
        index: dict[str, int] = {}
        for i, name in enumerate(self.team_agents):
            index.setdefault(name, i)
        return index

    @cached_property
    def agents(self) -> frozenset[str]:
        return frozenset(self.team_agents) | self.known_agents

    @cached_property
    def dependencies(self) -> Mapping[str, tuple[str, ...]]:
        """Title -> titles it depends on, for the first task of each title.

        Unknown titles and self-dependencies are left out: they are reported by their own rules
        and must not also show up as cycles.
        """
        graph: dict[str, tuple[str, ...]] = {}
        for task in self.spec.tasks:
            if task.title not in graph:
                graph[task.title] = tuple(
                    dict.fromkeys(d for d in task.depends_on if d in self.titles and d != task.title)
                )
        return graph

    @cached_property
    def ancestors(self) -> Mapping[str, int]:
        """Title -> bitset of every title it transitively depends on (bit i = i-th distinct title)."""
        return _ancestor_bitsets(list(self.dependencies), self.dependencies)

    @cached_property
    def bit(self) -> Mapping[str, int]:
        """Title -> its bit in ``ancestors``."""
        return {title: i for i, title in enumerate(self.dependencies)}

    def depends_on(self, title: str, ancestor: str) -> bool:
        """Whether ``title`` transitively depends on ``ancestor`` (both existing titles)."""
        return bool(self.ancestors[title] >> self.bit[ancestor] & 1)

    def describe_agents(self) -> str:
        names = list(self.team_agents) + sorted(self.known_agents - frozenset(self.team_agents))
        if not names:
            return "the mission has no team and the project has no agents"
        shown = ", ".join(_quote(n) for n in names[:10])
        return f"known agents: {shown}" + (", ..." if len(names) > 10 else "")


@dataclass(frozen=True)
class _Barrier:
    """A quality gate or a checkpoint, as far as the shared rules are concerned."""

    path: str  # "qualityGates[0]" or "checkpoints[0]"
    noun: str  # "gate" or "checkpoint"
    after_tasks: tuple[str, ...]
    blocks_tasks: tuple[str, ...]
    blocks_required: bool
    min_score: float | None = None


MissionRule = Callable[[_Context], Iterable[Problem]]
TaskRule = Callable[[_Context, str, TaskSpec], Iterable[Problem]]
ExpectationRule = Callable[[_Context, str, Expectation], Iterable[Problem]]
AgentRule = Callable[[_Context, str, AgentSpec], Iterable[Problem]]
BarrierRule = Callable[[_Context, _Barrier], Iterable[Problem]]


def _walk(ctx: _Context) -> Iterator[Problem]:
    """Runs the rule tables over the document, section by section, in document order."""
    spec = ctx.spec
    for mission_rule in MISSION_RULES:
        yield from mission_rule(ctx)
    for list_rule in TASK_LIST_RULES:
        yield from list_rule(ctx)
    for i, task in enumerate(spec.tasks):
        path = f"tasks[{i}]"
        for task_rule in TASK_RULES:
            yield from task_rule(ctx, path, task)
        for j, expectation in enumerate(task.expectations):
            for expectation_rule in EXPECTATION_RULES:
                yield from expectation_rule(ctx, f"{path}.expectations[{j}]", expectation)
    if spec.team is not None:
        for i, agent in enumerate(spec.team.agents):
            for agent_rule in AGENT_RULES:
                yield from agent_rule(ctx, f"team.agents[{i}]", agent)
    for barrier in _barriers(spec):
        for barrier_rule in BARRIER_RULES:
            yield from barrier_rule(ctx, barrier)


def _barriers(spec: MissionSpec) -> Iterator[_Barrier]:
    for i, gate in enumerate(spec.quality_gates):
        yield _Barrier(f"qualityGates[{i}]", "gate", gate.after_tasks, gate.blocks_tasks, True, gate.min_score)
    for i, checkpoint in enumerate(spec.checkpoints):
        yield _Barrier(f"checkpoints[{i}]", "checkpoint", checkpoint.after_tasks, checkpoint.blocks_tasks, False)
    for i, delay in enumerate(spec.delays):
        yield _Barrier(f"delays[{i}]", "delay", delay.after_tasks, delay.blocks_tasks, True)


# --- mission rules -------------------------------------------------------------------------


def quality_threshold_is_a_score(ctx: _Context) -> Iterator[Problem]:
    """``qualityThreshold`` is a score between 1 and 5."""
    value = ctx.spec.quality_threshold
    if not MIN_SCORE <= value <= MAX_SCORE:
        yield Problem("qualityThreshold", f"qualityThreshold must be between 1 and 5, got {_num(value)}")


def schedule_parses(ctx: _Context) -> Iterator[Problem]:
    """``schedule`` is a 5-field cron expression or an ISO 8601 timestamp."""
    if ctx.spec.schedule is not None:
        message = _schedule_problem(ctx.spec.schedule)
        if message is not None:
            yield Problem("schedule", message)


def timezone_exists(ctx: _Context) -> Iterator[Problem]:
    """``timezone`` is an IANA time zone name such as ``Europe/Rome``."""
    if ctx.spec.timezone is not None:
        message = _timezone_problem(ctx.spec.timezone)
        if message is not None:
            yield Problem("timezone", message)


def mission_concurrency_is_positive(ctx: _Context) -> Iterator[Problem]:
    """The mission's ``maxConcurrency``, when given, is between 1 and ``MAX_CONCURRENCY``."""
    limit = ctx.spec.max_concurrency
    if limit is not None and limit < 1:
        yield Problem("maxConcurrency", f"maxConcurrency must be at least 1, got {limit}")
    elif limit is not None and limit > MAX_CONCURRENCY:
        yield Problem("maxConcurrency", f"maxConcurrency must be at most {MAX_CONCURRENCY}, got {limit}")


def deadline_after_is_bounded(ctx: _Context) -> Iterator[Problem]:
    """``deadlineAfter``, when given, is more than 0 and at most a year (``MAX_DEADLINE_AFTER``) of seconds."""
    after = ctx.spec.deadline_after
    if after is not None and not 0 < after <= MAX_DEADLINE_AFTER:
        yield Problem(
            "deadlineAfter",
            f"deadlineAfter must be more than 0 and at most {MAX_DEADLINE_AFTER} seconds, got {_num(after)}",
        )


def deadline_is_ahead(ctx: _Context) -> Iterator[Problem]:
    """``deadline``, when given, lies in the future (checked when the caller gives ``now``): a run
    started after it would be stopped at once. ``deadlineAfter`` gives a deadline relative to each
    run's start."""
    deadline = ctx.spec.deadline
    if deadline is not None and ctx.now is not None and deadline <= ctx.now:
        yield Problem(
            "deadline",
            f"deadline {deadline.isoformat()} is in the past; give a future time, or deadlineAfter (seconds "
            "after each run starts) for a relative deadline",
        )


def budget_is_bounded(ctx: _Context) -> Iterator[Problem]:
    """A ``budget``'s ``maxCostUsd`` and ``maxTokens``, when given, are numbers in range."""
    budget = ctx.spec.budget or {}
    cost = budget.get("maxCostUsd")
    if cost is not None and (not _is_number(cost) or not 0 < cost <= MAX_BUDGET_USD):
        yield Problem(
            "budget.maxCostUsd", f"maxCostUsd must be more than 0 and at most {MAX_BUDGET_USD:g}, got {cost!r}"
        )
    tokens = budget.get("maxTokens")
    if tokens is not None and (not _is_number(tokens) or not 1 <= tokens <= MAX_BUDGET_TOKENS):
        yield Problem("budget.maxTokens", f"maxTokens must be between 1 and {MAX_BUDGET_TOKENS}, got {tokens!r}")


def assessor_endpoint_is_the_operators(ctx: _Context) -> Iterator[Problem]:
    """The ``assessor`` names no ``baseUrl``/``apiKeyEnv`` of its own (unless the operator allows it), and a
    ``profile`` it names is one of the operator's, for the assessor model's provider."""
    assessor = ctx.spec.assessor or {}
    model = assessor.get("model")
    yield from _endpoint_problems(ctx, "assessor", assessor, model if isinstance(model, str) else None)


def assessor_model_is_provider_model(ctx: _Context) -> Iterator[Problem]:
    """The ``assessor``'s ``model``, when given, is ``provider/model`` with a known provider."""
    model = (ctx.spec.assessor or {}).get("model")
    if isinstance(model, str):
        message = _model_problem(model)
        if message is not None:
            yield Problem("assessor.model", message)


def waits_are_bounded(ctx: _Context) -> Iterator[Problem]:
    """A delay's ``duration``, a checkpoint's ``timeout`` and an approval timeout (the mission's
    ``approvalTimeout`` and each ``retryPolicy.approvalTimeout``) are more than 0 and at most
    ``MAX_WAIT`` seconds, and a delay's duration parses (seconds, or an ISO 8601 duration)."""
    spec = ctx.spec
    waits: list[tuple[str, float | None]] = [("approvalTimeout", spec.approval_timeout)]
    for i, delay in enumerate(spec.delays):
        try:
            waits.append((f"delays[{i}].duration", delay.seconds))
        except ValueError as exc:
            yield Problem(f"delays[{i}].duration", str(exc))
    waits += [(f"checkpoints[{i}].timeout", c.timeout) for i, c in enumerate(spec.checkpoints)]
    for i, task in enumerate(spec.tasks):
        if task.retry_policy is not None:
            waits.append((f"tasks[{i}].retryPolicy.approvalTimeout", task.retry_policy.approval_timeout))
    for path, seconds in waits:
        if seconds is not None and not 0 < seconds <= MAX_WAIT:
            yield Problem(path, f"must be more than 0 and at most {MAX_WAIT} seconds, got {_num(seconds)}")


MISSION_RULES: tuple[MissionRule, ...] = (
    quality_threshold_is_a_score,
    schedule_parses,
    timezone_exists,
    mission_concurrency_is_positive,
    deadline_after_is_bounded,
    deadline_is_ahead,
    waits_are_bounded,
    budget_is_bounded,
    assessor_model_is_provider_model,
    assessor_endpoint_is_the_operators,
)


# --- rules on the task list ----------------------------------------------------------------


def mission_has_a_task(ctx: _Context) -> Iterator[Problem]:
    """A mission has at least one task."""
    if not ctx.spec.tasks:
        yield Problem("tasks", "a mission needs at least one task")


def mission_has_at_most_max_tasks(ctx: _Context) -> Iterator[Problem]:
    """A mission has at most ``max_tasks`` tasks (a server limit)."""
    if len(ctx.spec.tasks) > ctx.max_tasks:
        yield Problem("tasks", f"a mission may have at most {ctx.max_tasks} tasks, got {len(ctx.spec.tasks)}")


def dependencies_have_no_cycle(ctx: _Context) -> Iterator[Problem]:
    """``dependsOn`` forms no cycle; one cycle is named, once, on ``tasks``."""
    cycle = find_cycle(ctx.dependencies)
    if cycle is not None:
        yield Problem("tasks", f"dependency cycle: {format_cycle(cycle)}")


TASK_LIST_RULES: tuple[MissionRule, ...] = (
    mission_has_a_task,
    mission_has_at_most_max_tasks,
    dependencies_have_no_cycle,
)


# --- task rules ----------------------------------------------------------------------------


def title_is_not_blank(ctx: _Context, path: str, task: TaskSpec) -> Iterator[Problem]:
    """A task has a non-blank ``title``."""
    if not task.title.strip():
        yield Problem(f"{path}.title", "title must not be empty")


def title_is_unique(ctx: _Context, path: str, task: TaskSpec) -> Iterator[Problem]:
    """No two tasks share a title (the later one is reported)."""
    first = ctx.first_index[task.title]
    if f"tasks[{first}]" != path and task.title.strip():
        yield Problem(f"{path}.title", f"duplicate task title {_quote(task.title)} (also tasks[{first}])")


def description_is_not_blank(ctx: _Context, path: str, task: TaskSpec) -> Iterator[Problem]:
    """A task has a non-blank ``description``."""
    if not task.description.strip():
        yield Problem(f"{path}.description", "description must not be empty")


def assignee_is_known(ctx: _Context, path: str, task: TaskSpec) -> Iterator[Problem]:
    """``assignTo`` names an agent of the team or of the project."""
    if task.assign_to not in ctx.agents:
        yield Problem(
            f"{path}.assignTo",
            f"assigned to unknown agent {_quote(task.assign_to)} ({ctx.describe_agents()})",
        )


def dependencies_exist(ctx: _Context, path: str, task: TaskSpec) -> Iterator[Problem]:
    """Every ``dependsOn`` title names a task of the mission."""
    for i, title in enumerate(task.depends_on):
        if title not in ctx.titles:
            yield Problem(f"{path}.dependsOn[{i}]", f"depends on unknown task {_quote(title)}")


def task_does_not_depend_on_itself(ctx: _Context, path: str, task: TaskSpec) -> Iterator[Problem]:
    """A task does not list its own title in ``dependsOn``."""
    for i, title in enumerate(task.depends_on):
        if title == task.title:
            yield Problem(f"{path}.dependsOn[{i}]", f"task {_quote(title)} cannot depend on itself")


def dependencies_are_listed_once(ctx: _Context, path: str, task: TaskSpec) -> Iterator[Problem]:
    """A title appears at most once in a task's ``dependsOn`` (the repeat is reported)."""
    seen: set[str] = set()
    for i, title in enumerate(task.depends_on):
        if title in seen:
            yield Problem(f"{path}.dependsOn[{i}]", f"lists {_quote(title)} more than once")
        seen.add(title)


def max_retries_is_in_range(ctx: _Context, path: str, task: TaskSpec) -> Iterator[Problem]:
    """``maxRetries`` is between 0 and 100."""
    if not 0 <= task.max_retries <= MAX_RETRIES_LIMIT:
        yield Problem(
            f"{path}.maxRetries",
            f"maxRetries must be between 0 and {MAX_RETRIES_LIMIT}, got {task.max_retries}",
        )


def timeout_is_positive(ctx: _Context, path: str, task: TaskSpec) -> Iterator[Problem]:
    """``timeout``, when given, is more than 0 and at most ``MAX_TASK_TIMEOUT`` (30 days) of seconds."""
    if task.timeout is not None and not task.timeout > 0:
        yield Problem(f"{path}.timeout", f"timeout must be greater than 0 seconds, got {_num(task.timeout)}")
    elif task.timeout is not None and not task.timeout <= MAX_TASK_TIMEOUT:
        yield Problem(
            f"{path}.timeout", f"timeout must be at most {MAX_TASK_TIMEOUT} seconds, got {_num(task.timeout)}"
        )


def priority_is_in_range(ctx: _Context, path: str, task: TaskSpec) -> Iterator[Problem]:
    """``priority`` is between -1,000,000 and 1,000,000."""
    if not -MAX_PRIORITY <= task.priority <= MAX_PRIORITY:
        yield Problem(
            f"{path}.priority", f"priority must be between {-MAX_PRIORITY} and {MAX_PRIORITY}, got {task.priority}"
        )


def fallback_agent_is_known(ctx: _Context, path: str, task: TaskSpec) -> Iterator[Problem]:
    """``retryPolicy.fallbackAgent``, when given, names an agent of the team or of the project."""
    policy = task.retry_policy
    if policy is not None and policy.fallback_agent is not None and policy.fallback_agent not in ctx.agents:
        yield Problem(
            f"{path}.retryPolicy.fallbackAgent",
            f"fallback to unknown agent {_quote(policy.fallback_agent)} ({ctx.describe_agents()})",
        )


def escalation_model_is_provider_model(ctx: _Context, path: str, task: TaskSpec) -> Iterator[Problem]:
    """``retryPolicy.escalateModel``, when given, is ``provider/model`` with a known provider."""
    policy = task.retry_policy
    if policy is not None and policy.escalate_model is not None:
        message = _model_problem(policy.escalate_model)
        if message is not None:
            yield Problem(f"{path}.retryPolicy.escalateModel", message)


def escalation_comes_after_an_attempt(ctx: _Context, path: str, task: TaskSpec) -> Iterator[Problem]:
    """``retryPolicy.escalateAfter``, when given, is at least 1."""
    policy = task.retry_policy
    if policy is not None and policy.escalate_after is not None and policy.escalate_after < 1:
        yield Problem(
            f"{path}.retryPolicy.escalateAfter",
            f"escalateAfter must be at least 1, got {policy.escalate_after}",
        )


def escalation_fits_the_retry_budget(ctx: _Context, path: str, task: TaskSpec) -> Iterator[Problem]:
    """``retryPolicy.escalateAfter`` leaves an attempt to escalate: at most ``maxRetries`` (the task
    has ``1 + maxRetries`` attempts, and with ``escalateAfter`` the escalation happens inside them)."""
    policy = task.retry_policy
    if (
        policy is None
        or policy.escalate_after is None
        or policy.escalate_after < 1
        or (policy.fallback_agent is None and policy.escalate_model is None)
    ):
        return
    retries = max(0, task.max_retries)
    if policy.escalate_after > retries:
        yield Problem(
            f"{path}.retryPolicy.escalateAfter",
            f"escalateAfter must be at most maxRetries ({retries}), got {policy.escalate_after}: the task fails"
            f" after {retries + 1} attempt{'s' if retries else ''}, before any escalated one (without escalateAfter"
            " the escalation is one more attempt after the retries)",
        )


def backoff_is_not_negative(ctx: _Context, path: str, task: TaskSpec) -> Iterator[Problem]:
    """``retryPolicy.backoff`` is between 0 seconds and a day (``MAX_BACKOFF``)."""
    policy = task.retry_policy
    if policy is not None and not policy.backoff >= 0:
        yield Problem(f"{path}.retryPolicy.backoff", f"backoff must be 0 or more seconds, got {_num(policy.backoff)}")
    elif policy is not None and not policy.backoff <= MAX_BACKOFF:
        yield Problem(
            f"{path}.retryPolicy.backoff", f"backoff must be at most {MAX_BACKOFF} seconds, got {_num(policy.backoff)}"
        )


def criteria_have_a_judge_that_can_score(ctx: _Context, path: str, task: TaskSpec) -> Iterator[Problem]:
    """A ``criterion`` expectation has a judge that can score it: a ``scripted/`` judge (the mission's
    ``assessor``, else the server's judge model, else the model of each agent the task may run on)
    needs a ``script`` whose every step has a ``score`` between 1 and 5 (it never invents one)."""
    criteria = [j for j, e in enumerate(task.expectations) if e.type == "criterion"]
    if not criteria:
        return
    problem = _judge_problem(ctx, task)
    if problem is not None:
        for j in criteria:
            yield Problem(f"{path}.expectations[{j}]", problem)


def _judge_problem(ctx: _Context, task: TaskSpec) -> str | None:
    """Why no judge of ``task``'s criteria can score, or None (as ``Executor._judge_of`` picks it)."""
    assessor = ctx.spec.assessor or {}
    if isinstance(assessor.get("model"), str) and assessor["model"]:
        return _scripted_judge_problem(str(assessor["model"]), assessor, "the mission's assessor")
    if ctx.judge_model is not None:
        return _scripted_judge_problem(ctx.judge_model, {}, "the server's judge model (MISSIONS_JUDGE_MODEL)")
    team = {a.name: a for a in ctx.spec.team.agents} if ctx.spec.team else {}
    candidates: list[tuple[AgentSpec | None, str | None]] = [(team.get(task.assign_to), None)]
    policy = task.retry_policy
    if policy is not None and (policy.fallback_agent or policy.escalate_model):
        candidates.append((team.get(policy.fallback_agent or task.assign_to), policy.escalate_model))
    for agent, model in candidates:
        if agent is None:
            continue  # a project agent: its model is checked when the run starts
        used = model or agent.model
        config = agent.config if used.startswith("scripted/") else {}
        problem = _scripted_judge_problem(used, config, f"agent {_quote(agent.name)}'s own model")
        if problem is not None:
            return problem
    return None


def _scripted_judge_problem(model: str, config: Mapping[str, object], who: str) -> str | None:
    if not model.startswith("scripted/"):
        return None
    script = config.get("script")
    hint = 'give the mission an "assessor" with {"model": "scripted/...", "script": [{"score": 4, "reason": "..."}]}'
    if not isinstance(script, (list, tuple)) or not script:
        return f"the judge is {who}, {model}, a scripted judge without a script cannot score; {hint}"
    for i, step in enumerate(script):
        score = step.get("score") if isinstance(step, Mapping) else None
        if not isinstance(score, (int, float)) or not _is_number(score) or not MIN_SCORE <= score <= MAX_SCORE:
            return (
                f"the judge is {who}, {model}, and step {i + 1} of its script has no score between 1 and 5 "
                f"(got {score!r}); every step of a scripted judge's script needs one, {hint}"
            )
    return None


TASK_RULES: tuple[TaskRule, ...] = (
    title_is_not_blank,
    title_is_unique,
    description_is_not_blank,
    assignee_is_known,
    dependencies_exist,
    task_does_not_depend_on_itself,
    dependencies_are_listed_once,
    max_retries_is_in_range,
    timeout_is_positive,
    priority_is_in_range,
    fallback_agent_is_known,
    escalation_model_is_provider_model,
    escalation_comes_after_an_attempt,
    escalation_fits_the_retry_budget,
    backoff_is_not_negative,
    criteria_have_a_judge_that_can_score,
)


# --- expectation rules ---------------------------------------------------------------------


def expectation_type_is_known(ctx: _Context, path: str, expectation: Expectation) -> Iterator[Problem]:
    """``type`` is one of criterion, contains, regex, json_schema, command."""
    if expectation.type not in EXPECTATION_TYPES:
        yield Problem(
            f"{path}.type",
            f"unknown expectation type {_quote(expectation.type)}; use one of {', '.join(EXPECTATION_TYPES)}",
        )


def weight_is_positive(ctx: _Context, path: str, expectation: Expectation) -> Iterator[Problem]:
    """``weight`` is greater than 0 and at most ``MAX_WEIGHT``."""
    if not expectation.weight > 0:
        yield Problem(f"{path}.weight", f"weight must be greater than 0, got {_num(expectation.weight)}")
    elif not expectation.weight <= MAX_WEIGHT:
        yield Problem(f"{path}.weight", f"weight must be at most {MAX_WEIGHT:g}, got {_num(expectation.weight)}")


def command_timeout_is_bounded(ctx: _Context, path: str, expectation: Expectation) -> Iterator[Problem]:
    """An expectation's ``timeout``, when given, is more than 0 and at most a day of seconds."""
    timeout = expectation.document.get("timeout")
    if timeout is not None and (not _is_number(timeout) or not 0 < timeout <= MAX_COMMAND_TIMEOUT):
        yield Problem(
            f"{path}.timeout", f"timeout must be more than 0 and at most {MAX_COMMAND_TIMEOUT} seconds, got {timeout!r}"
        )


def criterion_is_stated(ctx: _Context, path: str, expectation: Expectation) -> Iterator[Problem]:
    """A ``criterion`` expectation states a non-blank criterion for the judge."""
    if expectation.type == "criterion" and not (expectation.criterion or "").strip():
        yield Problem(f"{path}.criterion", "a criterion expectation needs a non-empty criterion")


def contains_has_a_value(ctx: _Context, path: str, expectation: Expectation) -> Iterator[Problem]:
    """A ``contains`` expectation has a string ``value`` to look for."""
    if expectation.type == "contains" and not isinstance(expectation.document.get("value"), str):
        yield Problem(f"{path}.value", "a contains expectation needs a string value")


def regex_compiles(ctx: _Context, path: str, expectation: Expectation) -> Iterator[Problem]:
    """A ``regex`` expectation has a ``pattern`` that Python's ``re`` compiles."""
    if expectation.type != "regex":
        return
    pattern = expectation.document.get("pattern")
    if not isinstance(pattern, str):
        yield Problem(f"{path}.pattern", "a regex expectation needs a string pattern")
        return
    try:
        re.compile(pattern)
    except re.error as error:
        yield Problem(f"{path}.pattern", f"invalid regular expression {_quote(pattern)}: {error}")


def json_schema_is_an_object(ctx: _Context, path: str, expectation: Expectation) -> Iterator[Problem]:
    """A ``json_schema`` expectation has a ``schema`` object."""
    if expectation.type == "json_schema" and not isinstance(expectation.document.get("schema"), Mapping):
        yield Problem(f"{path}.schema", "a json_schema expectation needs a schema object")


def command_is_allowed(ctx: _Context, path: str, expectation: Expectation) -> Iterator[Problem]:
    """A ``command`` expectation is only accepted when the server allows commands."""
    if expectation.type == "command" and not ctx.allow_commands:
        yield Problem(f"{path}.type", COMMANDS_DISABLED)


def command_has_a_run_line(ctx: _Context, path: str, expectation: Expectation) -> Iterator[Problem]:
    """A ``command`` expectation has a non-blank ``run`` command line."""
    run = expectation.document.get("run")
    if expectation.type == "command" and not (isinstance(run, str) and run.strip()):
        yield Problem(f"{path}.run", "a command expectation needs a non-empty run command")


EXPECTATION_RULES: tuple[ExpectationRule, ...] = (
    expectation_type_is_known,
    weight_is_positive,
    command_timeout_is_bounded,
    criterion_is_stated,
    contains_has_a_value,
    regex_compiles,
    json_schema_is_an_object,
    command_is_allowed,
    command_has_a_run_line,
)


# --- agent rules ---------------------------------------------------------------------------


def agent_name_is_not_blank(ctx: _Context, path: str, agent: AgentSpec) -> Iterator[Problem]:
    """An agent has a non-blank ``name``."""
    if not agent.name.strip():
        yield Problem(f"{path}.name", "agent name must not be empty")


def agent_name_is_unique(ctx: _Context, path: str, agent: AgentSpec) -> Iterator[Problem]:
    """No two agents of the team share a name (the later one is reported)."""
    first = ctx.first_agent_index[agent.name]
    if f"team.agents[{first}]" != path:
        yield Problem(f"{path}.name", f"duplicate agent name {_quote(agent.name)} (also team.agents[{first}])")


def agent_model_is_provider_model(ctx: _Context, path: str, agent: AgentSpec) -> Iterator[Problem]:
    """``model`` is ``provider/model`` with a provider this server can drive."""
    message = _model_problem(agent.model)
    if message is not None:
        yield Problem(f"{path}.model", message)


def agent_concurrency_is_positive(ctx: _Context, path: str, agent: AgentSpec) -> Iterator[Problem]:
    """An agent's ``maxConcurrency``, when given, is between 1 and ``MAX_CONCURRENCY``."""
    limit = agent.max_concurrency
    if limit is not None and limit < 1:
        yield Problem(f"{path}.maxConcurrency", f"maxConcurrency must be at least 1, got {limit}")
    elif limit is not None and limit > MAX_CONCURRENCY:
        yield Problem(f"{path}.maxConcurrency", f"maxConcurrency must be at most {MAX_CONCURRENCY}, got {limit}")


def agent_endpoint_is_the_operators(ctx: _Context, path: str, agent: AgentSpec) -> Iterator[Problem]:
    """An agent names no ``baseUrl``/``apiKeyEnv`` of its own (unless the operator allows it): its model
    endpoint and key come from the operator; a ``profile`` it names is one of the operator's, for the
    agent model's provider."""
    yield from _endpoint_problems(ctx, path, agent.config, agent.model)


def script_delays_are_bounded(ctx: _Context, path: str, agent: AgentSpec) -> Iterator[Problem]:
    """A scripted agent's step ``delay``, when given, is between 0 seconds and a day."""
    script = agent.config.get("script")
    for i, step in enumerate(script if isinstance(script, (list, tuple)) else ()):
        delay = step.get("delay") if isinstance(step, Mapping) else None
        if delay is not None and (not _is_number(delay) or not 0 <= delay <= MAX_SCRIPT_DELAY):
            yield Problem(
                f"{path}.script[{i}].delay", f"delay must be between 0 and {MAX_SCRIPT_DELAY} seconds, got {delay!r}"
            )


def agent_tools_are_known(ctx: _Context, path: str, agent: AgentSpec) -> Iterator[Problem]:
    """Every entry of ``tools`` names a known tool (a string, or an object with a ``name``)."""
    tools = agent.config.get("tools")
    for i, entry in enumerate(tools if isinstance(tools, (list, tuple)) else ()):
        name = entry.get("name") if isinstance(entry, Mapping) else entry
        if name not in AGENT_TOOLS:
            shown = _quote(name) if isinstance(name, str) else json.dumps(entry)[:100]
            yield Problem(f"{path}.tools[{i}]", f"unknown tool {shown}; use one of {', '.join(AGENT_TOOLS)}")


def shell_tool_is_allowed(ctx: _Context, path: str, agent: AgentSpec) -> Iterator[Problem]:
    """The ``shell`` tool is only accepted when the server allows commands."""
    tools = agent.config.get("tools")
    for i, entry in enumerate(tools if isinstance(tools, (list, tuple)) else ()):
        name = entry.get("name") if isinstance(entry, Mapping) else entry
        if name == "shell" and not ctx.allow_commands:
            yield Problem(f"{path}.tools[{i}]", SHELL_DISABLED)


AGENT_RULES: tuple[AgentRule, ...] = (
    agent_name_is_not_blank,
    agent_name_is_unique,
    agent_model_is_provider_model,
    agent_concurrency_is_positive,
    agent_endpoint_is_the_operators,
    script_delays_are_bounded,
    agent_tools_are_known,
    shell_tool_is_allowed,
)


# --- gate and checkpoint rules -------------------------------------------------------------


def barrier_waits_for_a_task(ctx: _Context, barrier: _Barrier) -> Iterator[Problem]:
    """A gate or checkpoint names at least one task in ``afterTasks``."""
    if not barrier.after_tasks:
        yield Problem(f"{barrier.path}.afterTasks", f"a {barrier.noun} needs at least one task in afterTasks")


def after_tasks_exist(ctx: _Context, barrier: _Barrier) -> Iterator[Problem]:
    """Every ``afterTasks`` title names a task of the mission."""
    for i, title in enumerate(barrier.after_tasks):
        if title not in ctx.titles:
            yield Problem(f"{barrier.path}.afterTasks[{i}]", f"unknown task {_quote(title)}")


def gate_blocks_a_task(ctx: _Context, barrier: _Barrier) -> Iterator[Problem]:
    """A quality gate names at least one task in ``blocksTasks`` (for checkpoints it is optional)."""
    if barrier.blocks_required and not barrier.blocks_tasks:
        yield Problem(f"{barrier.path}.blocksTasks", f"a {barrier.noun} needs at least one task in blocksTasks")


def blocked_tasks_exist(ctx: _Context, barrier: _Barrier) -> Iterator[Problem]:
    """Every ``blocksTasks`` title names a task of the mission."""
    for i, title in enumerate(barrier.blocks_tasks):
        if title not in ctx.titles:
            yield Problem(f"{barrier.path}.blocksTasks[{i}]", f"unknown task {_quote(title)}")


def task_is_not_both_after_and_blocked(ctx: _Context, barrier: _Barrier) -> Iterator[Problem]:
    """No title is both in ``afterTasks`` and in ``blocksTasks`` of the same barrier."""
    after = set(barrier.after_tasks)
    for i, title in enumerate(barrier.blocks_tasks):
        if title in after:
            yield Problem(f"{barrier.path}.blocksTasks[{i}]", f"{_quote(title)} is in both afterTasks and blocksTasks")


def blocked_tasks_depend_on_after_tasks(ctx: _Context, barrier: _Barrier) -> Iterator[Problem]:
    """Every blocked task depends, transitively via ``dependsOn``, on every one of ``afterTasks``.

    Otherwise a blocked task could already be running, or be needed by an afterTask, when the
    barrier is evaluated.
    """
    after = [t for t in dict.fromkeys(barrier.after_tasks) if t in ctx.titles]
    for i, blocked in enumerate(barrier.blocks_tasks):
        if blocked not in ctx.titles or blocked in after:
            continue
        for title in after:
            if not ctx.depends_on(blocked, title):
                yield Problem(
                    f"{barrier.path}.blocksTasks[{i}]",
                    f"{_quote(blocked)} is blocked by this {barrier.noun} but does not depend on {_quote(title)}",
                )


def gate_min_score_is_a_score(ctx: _Context, barrier: _Barrier) -> Iterator[Problem]:
    """A gate's ``minScore``, when given, is a score between 1 and 5."""
    if barrier.min_score is not None and not MIN_SCORE <= barrier.min_score <= MAX_SCORE:
        yield Problem(f"{barrier.path}.minScore", f"minScore must be between 1 and 5, got {_num(barrier.min_score)}")


BARRIER_RULES: tuple[BarrierRule, ...] = (
    barrier_waits_for_a_task,
    after_tasks_exist,
    gate_blocks_a_task,
    blocked_tasks_exist,
    task_is_not_both_after_and_blocked,
    blocked_tasks_depend_on_after_tasks,
    gate_min_score_is_a_score,
)


# --- helpers -------------------------------------------------------------------------------


def _quote(text: str) -> str:
    """A value as it would appear in JSON, so quotes inside titles stay unambiguous."""
    return json.dumps(text, ensure_ascii=False)


def _is_number(value: object) -> bool:
    """A JSON number (not a boolean), finite."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value == value
        and abs(value) != float("inf")
    )


def _endpoint_problems(ctx: _Context, path: str, config: Mapping[str, object], model: str | None) -> Iterator[Problem]:
    if not ctx.allow_mission_endpoints:
        for name in ENDPOINT_FIELDS:
            if config.get(name) is not None:
                yield Problem(f"{path}.{name}", f"{name} {ENDPOINTS_BY_OPERATOR}{_profiles_hint(ctx)}")
    profile = config.get("profile")
    if profile is None:
        return
    provider = model.split("/", 1)[0] if model else None
    if not isinstance(profile, str) or profile not in ctx.profiles:
        shown = _quote(profile) if isinstance(profile, str) else json.dumps(profile)[:60]
        yield Problem(f"{path}.profile", f"unknown provider profile {shown}{_profiles_hint(ctx)}")
    elif provider is not None and ctx.profiles[profile] != provider:
        yield Problem(
            f"{path}.profile",
            f"profile {_quote(profile)} is for {ctx.profiles[profile]} models, not for {_quote(model or '')}",
        )


def _profiles_hint(ctx: _Context) -> str:
    if not ctx.profiles:
        return " (this server defines no provider profiles: MISSIONS_PROVIDER_PROFILES)"
    names = sorted(ctx.profiles)
    shown = ", ".join(_quote(n) for n in names[:10])
    return f" (this server's profiles: {shown}{', ...' if len(names) > 10 else ''})"


def _num(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _model_problem(model: str) -> str | None:
    provider, slash, name = model.partition("/")
    if slash and provider in PROVIDERS and name.strip():
        return None
    return f'model {_quote(model)} must be "provider/model" with provider one of: {", ".join(PROVIDERS)}'


def _schedule_problem(schedule: str) -> str | None:
    if len(schedule.split()) == 5:
        if croniter.is_valid(schedule):
            return None
        return f"schedule {_quote(schedule)} is not a valid cron expression"
    try:
        parse_timestamp(schedule.strip())
    except ValueError:
        return (
            f"schedule {_quote(schedule)} is neither a 5-field cron expression "
            "(minute hour day-of-month month day-of-week) nor an ISO 8601 timestamp"
        )
    return None


def _timezone_problem(timezone: str) -> str | None:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return f'unknown timezone {_quote(timezone)}; use an IANA name such as "Europe/Rome" or "UTC"'
    return None


def _ancestor_bitsets(nodes: Sequence[str], edges: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Node -> bitset of the nodes it reaches through ``edges`` (bit i = ``nodes[i]``).

    Iterative Tarjan: strongly connected components come out dependencies-first, so one pass
    ORs each component's successors' bitsets. Cycles (already reported) stay correct: members
    of a cyclic component reach each other.
    """
    position = {node: i for i, node in enumerate(nodes)}
    successors = [[position[s] for s in edges.get(node, ()) if s in position] for node in nodes]
    order = [-1] * len(nodes)
    low = [0] * len(nodes)
    component = [-1] * len(nodes)
    reach: list[int] = []  # component -> bitset of the nodes it reaches
    stack: list[int] = []
    on_stack = [False] * len(nodes)
    counter = 0
    for root in range(len(nodes)):
        if order[root] != -1:
            continue
        order[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack[root] = True
        work = [(root, 0)]
        while work:
            node, next_edge = work[-1]
            if next_edge < len(successors[node]):
                work[-1] = (node, next_edge + 1)
                successor = successors[node][next_edge]
                if order[successor] == -1:
                    order[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack[successor] = True
                    work.append((successor, 0))
                elif on_stack[successor]:
                    low[node] = min(low[node], order[successor])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] != order[node]:
                continue
            members: list[int] = []
            while True:
                member = stack.pop()
                on_stack[member] = False
                component[member] = len(reach)
                members.append(member)
                if member == node:
                    break
            bits = 0
            cyclic = len(members) > 1
            for member in members:
                for successor in successors[member]:
                    if component[successor] == len(reach):
                        cyclic = True
                    else:
                        bits |= reach[component[successor]] | 1 << successor
            if cyclic:
                for member in members:
                    bits |= 1 << member
            reach.append(bits)
    return {node: reach[component[i]] for i, node in enumerate(nodes)}
