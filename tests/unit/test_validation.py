"""Mission validation: what a user is told when a mission document is rejected, and what is accepted."""

from __future__ import annotations

import copy
import graphlib
import itertools
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.spec import MissionSpec
from orchestrator.validation import (
    COMMANDS_DISABLED,
    Problem,
    find_cycle,
    format_cycle,
    validate_mission,
    validate_schedule,
)
from tests.fixtures.examples import CODE_REVIEW_PIPELINE, DEPLOY_PIPELINE

# --- helpers -------------------------------------------------------------------------------


def a_mission(**fields: Any) -> dict[str, Any]:
    """A small valid mission: "Run tests" then "Deploy", a gate between them, two agents."""
    doc: dict[str, Any] = {
        "name": "release",
        "prompt": "Ship it.",
        "tasks": [
            {"title": "Run tests", "description": "Run the suite.", "assignTo": "tester"},
            {
                "title": "Deploy",
                "description": "Deploy the build.",
                "assignTo": "deployer",
                "dependsOn": ["Run tests"],
            },
        ],
        "team": {
            "name": "crew",
            "volatile": True,
            "agents": [
                {"name": "tester", "role": "tests", "model": "scripted/tester"},
                {"name": "deployer", "role": "deploys", "model": "openai/gpt-4o"},
            ],
        },
    }
    doc.update(fields)
    return doc


def with_task(doc: dict[str, Any], index: int, **fields: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["tasks"][index].update(fields)
    return doc


def with_agent(doc: dict[str, Any], index: int, **fields: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["team"]["agents"][index].update(fields)
    return doc


def chain(n: int) -> list[dict[str, Any]]:
    """Tasks "t0" .. "t{n-1}", each depending on the one before."""
    return [
        {
            "title": f"t{i}",
            "description": "step",
            "assignTo": "tester",
            **({"dependsOn": [f"t{i - 1}"]} if i else {}),
        }
        for i in range(n)
    ]


def problems(doc: dict[str, Any], **options: Any) -> list[Problem]:
    return validate_mission(MissionSpec.from_document(doc), **options)


def fields(doc: dict[str, Any], **options: Any) -> list[str]:
    return [p.field for p in problems(doc, **options)]


def only_problem(doc: dict[str, Any], **options: Any) -> Problem:
    found = problems(doc, **options)
    assert len(found) == 1, found
    return found[0]


def graph_mission(deps: Sequence[Iterable[int]]) -> dict[str, Any]:
    """One task per entry of ``deps``, titled "n{i}", depending on the listed indexes."""
    return a_mission(
        tasks=[
            {
                "title": f"n{i}",
                "description": "node",
                "assignTo": "tester",
                "dependsOn": [f"n{j}" for j in targets],
            }
            for i, targets in enumerate(deps)
        ]
    )


def edges_of(doc: dict[str, Any]) -> dict[str, list[str]]:
    return {t["title"]: list(t.get("dependsOn", [])) for t in doc["tasks"]}


def reaches(edges: dict[str, list[str]], start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        for nxt in edges.get(todo.pop(), []):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


# --- the published examples ----------------------------------------------------------------


@pytest.mark.parametrize("document", [DEPLOY_PIPELINE, CODE_REVIEW_PIPELINE], ids=lambda d: d["name"])
def test_documented_examples_validate_clean(document: dict[str, Any]) -> None:
    assert problems(document) == []


def test_small_valid_mission_validates_clean() -> None:
    assert problems(a_mission()) == []


# --- the task list -------------------------------------------------------------------------


def test_mission_without_tasks_is_rejected() -> None:
    assert only_problem(a_mission(tasks=[])) == Problem("tasks", "a mission needs at least one task")


def test_mission_over_the_task_limit_is_rejected() -> None:
    doc = a_mission(tasks=chain(4))
    assert problems(doc, max_tasks=4) == []
    assert only_problem(doc, max_tasks=3) == Problem("tasks", "a mission may have at most 3 tasks, got 4")


# --- titles and descriptions ---------------------------------------------------------------


def test_duplicate_title_is_named_on_the_later_task() -> None:
    doc = with_task(a_mission(), 1, title="Run tests", dependsOn=[])
    assert only_problem(doc) == Problem("tasks[1].title", 'duplicate task title "Run tests" (also tasks[0])')


def test_blank_title_is_rejected() -> None:
    doc = with_task(a_mission(), 0, title="  ")
    assert Problem("tasks[0].title", "title must not be empty") in problems(doc)


def test_blank_description_is_rejected() -> None:
    doc = with_task(a_mission(), 1, description="\n")
    assert only_problem(doc) == Problem("tasks[1].description", "description must not be empty")


# --- agents referenced by tasks ------------------------------------------------------------


def test_unknown_assignee_is_named() -> None:
    problem = only_problem(with_task(a_mission(), 1, assignTo="ghost"))
    assert problem.field == "tasks[1].assignTo"
    assert problem.message == 'assigned to unknown agent "ghost" (known agents: "tester", "deployer")'


def test_task_may_be_assigned_to_a_project_agent_from_an_earlier_team() -> None:
    doc = with_task(a_mission(), 1, assignTo="veteran")
    assert problems(doc, known_agents={"veteran"}) == []


def test_mission_without_team_only_accepts_project_agents() -> None:
    doc = a_mission(team=None)
    assert problems(doc, known_agents=["tester", "deployer"]) == []
    assert "the mission has no team and the project has no agents" in problems(doc)[0].message


def test_unknown_fallback_agent_is_named() -> None:
    doc = with_task(a_mission(), 0, retryPolicy={"fallbackAgent": "nobody"})
    problem = only_problem(doc)
    assert problem.field == "tasks[0].retryPolicy.fallbackAgent"
    assert '"nobody"' in problem.message


def test_known_fallback_agent_is_accepted() -> None:
    doc = with_task(a_mission(), 0, retryPolicy={"fallbackAgent": "deployer"})
    assert problems(doc) == []


# --- the team ------------------------------------------------------------------------------


def test_duplicate_agent_name_is_named() -> None:
    doc = with_agent(a_mission(), 1, name="tester")
    doc = with_task(doc, 1, assignTo="tester")
    assert only_problem(doc) == Problem("team.agents[1].name", 'duplicate agent name "tester" (also team.agents[0])')


def test_blank_agent_name_is_rejected() -> None:
    doc = a_mission()
    doc["team"]["agents"].append({"name": "", "model": "scripted/x"})
    assert only_problem(doc) == Problem("team.agents[2].name", "agent name must not be empty")


@pytest.mark.parametrize(
    "model", ["anthropic/claude-sonnet-4-5", "openai/gpt-4o", "scripted/echo", "openai/meta/llama-3"]
)
def test_agent_model_with_a_known_provider_is_accepted(model: str) -> None:
    assert problems(with_agent(a_mission(), 0, model=model)) == []


@pytest.mark.parametrize("model", ["gpt-4o", "google/gemini-pro", "openai/", "/gpt-4o", ""])
def test_agent_model_must_be_provider_slash_model(model: str) -> None:
    problem = only_problem(with_agent(a_mission(), 0, model=model))
    assert problem.field == "team.agents[0].model"
    assert problem.message == (
        f'model "{model}" must be "provider/model" with provider one of: anthropic, openai, scripted'
    )


def test_agent_concurrency_must_be_at_least_one() -> None:
    assert problems(with_agent(a_mission(), 0, maxConcurrency=1)) == []
    assert only_problem(with_agent(a_mission(), 0, maxConcurrency=0)) == Problem(
        "team.agents[0].maxConcurrency", "maxConcurrency must be at least 1, got 0"
    )


# --- retry policy --------------------------------------------------------------------------


def test_full_retry_policy_is_accepted() -> None:
    policy = {
        "fallbackAgent": "deployer",
        "escalateModel": "anthropic/claude-opus-4",
        "escalateAfter": 1,
        "backoff": 0,
    }
    assert problems(with_task(a_mission(), 0, retryPolicy=policy)) == []


def test_escalation_model_must_be_provider_slash_model() -> None:
    problem = only_problem(with_task(a_mission(), 0, retryPolicy={"escalateModel": "gpt-5"}))
    assert problem.field == "tasks[0].retryPolicy.escalateModel"
    assert '"gpt-5"' in problem.message


def test_escalation_must_come_after_at_least_one_attempt() -> None:
    assert only_problem(with_task(a_mission(), 0, retryPolicy={"escalateAfter": 0})) == Problem(
        "tasks[0].retryPolicy.escalateAfter", "escalateAfter must be at least 1, got 0"
    )


def test_an_escalation_after_the_last_attempt_is_rejected() -> None:
    task = {"maxRetries": 1, "retryPolicy": {"fallbackAgent": "deployer", "escalateAfter": 2}}
    problem = only_problem(with_task(a_mission(), 0, **task))
    assert problem.field == "tasks[0].retryPolicy.escalateAfter"
    assert problem.message.startswith(
        "escalateAfter must be at most maxRetries (1), got 2: the task fails after 2 attempts, before any escalated one"
    )
    no_retries = {"maxRetries": 0, "retryPolicy": {"escalateModel": "openai/gpt-big", "escalateAfter": 1}}
    assert (
        "at most maxRetries (0), got 1: the task fails after 1 attempt,"
        in only_problem(with_task(a_mission(), 0, **no_retries)).message
    )


def test_an_escalation_within_the_retry_budget_or_without_a_target_is_accepted() -> None:
    for task in (
        {"maxRetries": 2, "retryPolicy": {"fallbackAgent": "deployer", "escalateAfter": 2}},
        {"maxRetries": 0, "retryPolicy": {"fallbackAgent": "deployer"}},
        {"maxRetries": 0, "retryPolicy": {"escalateAfter": 3, "backoff": 1}},
    ):
        assert problems(with_task(a_mission(), 0, **task)) == []


def test_negative_backoff_is_rejected() -> None:
    assert only_problem(with_task(a_mission(), 0, retryPolicy={"backoff": -1.5})) == Problem(
        "tasks[0].retryPolicy.backoff", "backoff must be 0 or more seconds, got -1.5"
    )


# --- dependencies --------------------------------------------------------------------------


def test_dependency_on_a_missing_task_names_the_title() -> None:
    doc = with_task(a_mission(), 1, dependsOn=["Run tests", "Build"])
    assert only_problem(doc) == Problem("tasks[1].dependsOn[1]", 'depends on unknown task "Build"')


def test_task_cannot_depend_on_itself() -> None:
    doc = with_task(a_mission(), 1, dependsOn=["Deploy"])
    assert only_problem(doc) == Problem("tasks[1].dependsOn[0]", 'task "Deploy" cannot depend on itself')


def test_dependency_listed_twice_is_rejected() -> None:
    doc = with_task(a_mission(), 1, dependsOn=["Run tests", "Run tests"])
    assert only_problem(doc) == Problem("tasks[1].dependsOn[1]", 'lists "Run tests" more than once')


def test_cycle_error_names_the_cycle() -> None:
    doc = with_task(a_mission(), 0, dependsOn=["Deploy"])
    assert only_problem(doc) == Problem("tasks", 'dependency cycle: "Run tests" -> "Deploy" -> "Run tests"')


def test_cycle_is_reported_once_even_when_there_are_several() -> None:
    doc = graph_mission([[1], [0], [3], [2]])
    assert fields(doc) == ["tasks"]


def test_longer_cycle_is_named_in_dependency_order() -> None:
    doc = graph_mission([[2], [0], [1]])
    assert only_problem(doc).message == 'dependency cycle: "n0" -> "n2" -> "n1" -> "n0"'


# --- numbers in range ----------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [1, 3.5, 5])
def test_quality_threshold_between_one_and_five_is_accepted(threshold: float) -> None:
    assert problems(a_mission(qualityThreshold=threshold)) == []


@pytest.mark.parametrize("threshold", [0, 0.99, 5.5])
def test_quality_threshold_outside_one_to_five_is_rejected(threshold: float) -> None:
    problem = only_problem(a_mission(qualityThreshold=threshold))
    assert problem.field == "qualityThreshold"
    assert problem.message == f"qualityThreshold must be between 1 and 5, got {threshold:g}"


@pytest.mark.parametrize("retries", [-1, 101])
def test_max_retries_outside_zero_to_hundred_is_rejected(retries: int) -> None:
    assert only_problem(with_task(a_mission(), 0, maxRetries=retries)) == Problem(
        "tasks[0].maxRetries", f"maxRetries must be between 0 and 100, got {retries}"
    )


@pytest.mark.parametrize("retries", [0, 100])
def test_max_retries_at_the_limits_is_accepted(retries: int) -> None:
    assert problems(with_task(a_mission(), 0, maxRetries=retries)) == []


def test_timeout_must_be_positive() -> None:
    assert problems(with_task(a_mission(), 0, timeout=0.5)) == []
    assert only_problem(with_task(a_mission(), 0, timeout=0)) == Problem(
        "tasks[0].timeout", "timeout must be greater than 0 seconds, got 0"
    )


def test_any_priority_is_accepted() -> None:
    assert problems(with_task(a_mission(), 0, priority=-1000)) == []


def test_mission_concurrency_must_be_at_least_one() -> None:
    assert problems(a_mission(maxConcurrency=1)) == []
    assert only_problem(a_mission(maxConcurrency=0)) == Problem(
        "maxConcurrency", "maxConcurrency must be at least 1, got 0"
    )


# --- expectations --------------------------------------------------------------------------


SCORING_ASSESSOR = {"model": "scripted/judge", "script": [{"score": 4, "reason": "fine"}]}


def expecting(*expectations: dict[str, Any]) -> dict[str, Any]:
    return with_task(a_mission(assessor=SCORING_ASSESSOR), 0, expectations=list(expectations))


# -- what can only fail at run time is rejected at create ------------------------------------------
def test_a_criterion_judged_by_a_scripted_model_without_a_script_is_rejected() -> None:
    doc = with_task(a_mission(), 0, expectations=[{"type": "contains", "value": "x"}, {"criterion": "ok"}])
    problem = only_problem(doc)
    assert problem.field == "tasks[0].expectations[1]"
    assert 'agent "tester"\'s own model, scripted/tester, a scripted judge without a script cannot score' in (
        problem.message
    )


def test_a_scripted_assessor_needs_a_score_in_every_step() -> None:
    doc = with_task(
        a_mission(assessor={"model": "scripted/judge", "script": [{"score": 4}, {"reason": "no score"}]}),
        0,
        expectations=[{"criterion": "ok"}],
    )
    problem = only_problem(doc)
    assert problem.field == "tasks[0].expectations[0]"
    assert "step 2 of its script has no score between 1 and 5" in problem.message


def test_a_scripted_agent_whose_script_scores_can_judge_itself() -> None:
    doc = with_agent(a_mission(), 0, script=[{"output": "ok", "score": 5}])
    assert problems(with_task(doc, 0, expectations=[{"criterion": "ok"}])) == []


def test_a_model_judge_or_the_servers_judge_model_is_not_second_guessed() -> None:
    doc = with_task(a_mission(), 1, expectations=[{"criterion": "ok"}])  # deployer: openai/gpt-4o
    assert problems(doc) == []
    assert problems(with_task(a_mission(), 0, expectations=[{"criterion": "ok"}]), judge_model="openai/judge") == []
    rejected = problems(doc, judge_model="scripted/judge")
    assert [p.field for p in rejected] == ["tasks[1].expectations[0]"]
    assert "MISSIONS_JUDGE_MODEL" in rejected[0].message


def test_an_escalation_to_a_scripted_model_is_judged_by_it_too() -> None:
    doc = with_task(a_mission(), 1, expectations=[{"criterion": "ok"}], retryPolicy={"escalateModel": "scripted/cheap"})
    assert [p.field for p in problems(doc)] == ["tasks[1].expectations[0]"]


def test_a_deadline_in_the_past_is_rejected_only_when_now_is_given() -> None:
    doc = a_mission(deadline="2026-01-01T00:00:00Z")
    assert problems(doc) == []
    (problem,) = problems(doc, now=datetime(2026, 6, 1, tzinfo=UTC))
    assert problem.field == "deadline" and "is in the past" in problem.message and "deadlineAfter" in problem.message
    assert problems(doc, now=datetime(2025, 6, 1, tzinfo=UTC)) == []


def test_every_kind_of_expectation_is_accepted_when_well_formed() -> None:
    doc = expecting(
        {"criterion": "All tests pass", "weight": 2},
        {"type": "contains", "value": "PASSED"},
        {"type": "regex", "pattern": r"\d+ passed"},
        {"type": "json_schema", "schema": {"type": "object"}},
        {"type": "command", "run": "pytest -q"},
    )
    assert problems(doc, allow_commands=True) == []


def test_unknown_expectation_type_is_named() -> None:
    problem = only_problem(expecting({"type": "vibes"}))
    assert problem.field == "tasks[0].expectations[0].type"
    assert problem.message.startswith('unknown expectation type "vibes"')


@pytest.mark.parametrize("weight", [0, -1])
def test_expectation_weight_must_be_positive(weight: float) -> None:
    assert only_problem(expecting({"criterion": "ok", "weight": weight})) == Problem(
        "tasks[0].expectations[0].weight", f"weight must be greater than 0, got {weight}"
    )


def test_criterion_must_not_be_blank() -> None:
    assert only_problem(expecting({"criterion": " "})).field == "tasks[0].expectations[0].criterion"


def test_contains_needs_a_string_value() -> None:
    assert only_problem(expecting({"type": "contains"})).field == "tasks[0].expectations[0].value"


def test_regex_pattern_must_compile() -> None:
    problem = only_problem(expecting({"type": "regex", "pattern": "(unclosed"}))
    assert problem.field == "tasks[0].expectations[0].pattern"
    assert problem.message.startswith('invalid regular expression "(unclosed": ')


def test_json_schema_needs_a_schema_object() -> None:
    doc = expecting({"type": "json_schema", "schema": "object"})
    assert only_problem(doc).field == "tasks[0].expectations[0].schema"


def test_command_expectation_is_rejected_while_commands_are_disabled() -> None:
    doc = expecting({"type": "command", "run": "make test"})
    assert only_problem(doc) == Problem("tasks[0].expectations[0].type", COMMANDS_DISABLED)
    assert COMMANDS_DISABLED == (
        "command expectations are disabled on this server (MISSIONS_ALLOW_COMMANDS=true enables them)"
    )


def test_command_expectation_needs_a_command_line() -> None:
    doc = expecting({"type": "command"})
    assert only_problem(doc, allow_commands=True).field == "tasks[0].expectations[0].run"


# --- quality gates -------------------------------------------------------------------------


def gated(**gate: Any) -> dict[str, Any]:
    return a_mission(qualityGates=[{"afterTasks": ["Run tests"], "blocksTasks": ["Deploy"], **gate}])


def test_gate_between_dependent_tasks_is_accepted() -> None:
    assert problems(gated(minScore=4.0, requireAllPassed=True)) == []


@pytest.mark.parametrize("score", [0, 5.1])
def test_gate_min_score_outside_one_to_five_is_rejected(score: float) -> None:
    assert only_problem(gated(minScore=score)) == Problem(
        "qualityGates[0].minScore", f"minScore must be between 1 and 5, got {score:g}"
    )


def test_gate_needs_after_tasks() -> None:
    assert only_problem(gated(afterTasks=[])) == Problem(
        "qualityGates[0].afterTasks", "a gate needs at least one task in afterTasks"
    )


def test_gate_needs_blocked_tasks() -> None:
    assert only_problem(gated(blocksTasks=[])) == Problem(
        "qualityGates[0].blocksTasks", "a gate needs at least one task in blocksTasks"
    )


def test_gate_referencing_a_missing_task_names_it() -> None:
    found = problems(gated(afterTasks=["Lint"], blocksTasks=["Deploy", "Release"]))
    assert found == [
        Problem("qualityGates[0].afterTasks[0]", 'unknown task "Lint"'),
        Problem("qualityGates[0].blocksTasks[1]", 'unknown task "Release"'),
    ]


def test_task_cannot_be_both_after_and_blocked_by_a_gate() -> None:
    assert only_problem(gated(blocksTasks=["Run tests"])) == Problem(
        "qualityGates[0].blocksTasks[0]", '"Run tests" is in both afterTasks and blocksTasks'
    )


def test_gate_blocking_a_task_that_does_not_depend_on_its_after_tasks_is_rejected() -> None:
    doc = with_task(gated(), 1, dependsOn=[])
    assert only_problem(doc) == Problem(
        "qualityGates[0].blocksTasks[0]",
        '"Deploy" is blocked by this gate but does not depend on "Run tests"',
    )


def test_gate_accepts_a_transitive_dependency() -> None:
    doc = a_mission(tasks=chain(4), qualityGates=[{"afterTasks": ["t0"], "blocksTasks": ["t3"]}])
    assert problems(doc) == []


def test_gate_requires_a_dependency_on_every_after_task() -> None:
    doc = a_mission(tasks=chain(3), qualityGates=[{"afterTasks": ["t0", "t2"], "blocksTasks": ["t1"]}])
    assert only_problem(doc).message == '"t1" is blocked by this gate but does not depend on "t2"'


# --- checkpoints ---------------------------------------------------------------------------


def test_checkpoint_without_blocked_tasks_is_accepted() -> None:
    doc = a_mission(checkpoints=[{"afterTasks": ["Run tests"], "message": "Approve?"}])
    assert problems(doc) == []


def test_checkpoint_needs_after_tasks() -> None:
    doc = a_mission(checkpoints=[{"afterTasks": [], "message": "Approve?"}])
    assert only_problem(doc) == Problem(
        "checkpoints[0].afterTasks", "a checkpoint needs at least one task in afterTasks"
    )


def test_checkpoint_referencing_a_missing_task_names_it() -> None:
    doc = a_mission(checkpoints=[{"afterTasks": ["Run tests"], "blocksTasks": ["Ship"]}])
    assert only_problem(doc) == Problem("checkpoints[0].blocksTasks[0]", 'unknown task "Ship"')


def test_checkpoint_blocking_a_task_that_does_not_depend_on_its_after_tasks_is_rejected() -> None:
    doc = a_mission(checkpoints=[{"afterTasks": ["Deploy"], "blocksTasks": ["Run tests"]}])
    assert only_problem(doc).message == ('"Run tests" is blocked by this checkpoint but does not depend on "Deploy"')


def test_checkpoint_timeout_and_on_timeout_are_accepted_and_round_trip() -> None:
    checkpoint = {"afterTasks": ["Run tests"], "message": "Approve?", "timeout": 600, "onTimeout": "approve"}
    doc = a_mission(checkpoints=[checkpoint])
    assert problems(doc) == []
    assert MissionSpec.from_document(doc).to_document()["checkpoints"] == [checkpoint]


@pytest.mark.parametrize("timeout", [0, -1, 366 * 86_400 + 1])
def test_a_checkpoint_timeout_out_of_range_is_rejected(timeout: float) -> None:
    doc = a_mission(checkpoints=[{"afterTasks": ["Run tests"], "timeout": timeout}])
    assert only_problem(doc).field == "checkpoints[0].timeout"


def test_approval_timeouts_are_checked_on_the_mission_and_in_each_retry_policy() -> None:
    doc = with_task(a_mission(approvalTimeout=0), 1, retryPolicy={"approvalTimeout": -5})
    assert fields(doc) == ["approvalTimeout", "tasks[1].retryPolicy.approvalTimeout"]


# --- delays --------------------------------------------------------------------------------


def delay(**fields: Any) -> dict[str, Any]:
    return {"name": "cool-off", "afterTasks": ["Run tests"], "blocksTasks": ["Deploy"], "duration": "PT10M", **fields}


@pytest.mark.parametrize("duration", ["PT10M", "P1DT2H", "PT0.5S", 30, 1.5])
def test_a_delay_is_accepted_and_kept_as_given(duration: Any) -> None:
    doc = a_mission(delays=[delay(duration=duration)])
    assert problems(doc) == []
    assert MissionSpec.from_document(doc).to_document()["delays"] == [delay(duration=duration)]


@pytest.mark.parametrize("duration", ["10 minutes", "P1M", "P1Y", "PT", "P", 0, -3])
def test_a_delay_whose_duration_is_not_a_fixed_positive_duration_is_rejected(duration: Any) -> None:
    assert only_problem(a_mission(delays=[delay(duration=duration)])).field == "delays[0].duration"


def test_a_delay_is_validated_like_a_checkpoint() -> None:
    assert only_problem(a_mission(delays=[delay(afterTasks=[])])) == Problem(
        "delays[0].afterTasks", "a delay needs at least one task in afterTasks"
    )
    assert only_problem(a_mission(delays=[delay(blocksTasks=[])])) == Problem(
        "delays[0].blocksTasks", "a delay needs at least one task in blocksTasks"
    )
    assert only_problem(a_mission(delays=[delay(blocksTasks=["Ship"])])) == Problem(
        "delays[0].blocksTasks[0]", 'unknown task "Ship"'
    )
    reversed_delay = delay(afterTasks=["Deploy"], blocksTasks=["Run tests"])
    assert only_problem(a_mission(delays=[reversed_delay])).message == (
        '"Run tests" is blocked by this delay but does not depend on "Deploy"'
    )


# --- schedule and timezone -----------------------------------------------------------------


@pytest.mark.parametrize(
    "schedule", ["0 9 * * MON-FRI", "*/15 * * * *", "2026-04-01T00:00:00Z", "2026-04-01T09:30:00+02:00"]
)
def test_cron_or_iso_schedule_is_accepted(schedule: str) -> None:
    assert problems(a_mission(schedule=schedule, timezone="Europe/Rome")) == []


def test_invalid_five_field_cron_is_rejected() -> None:
    assert only_problem(a_mission(schedule="61 * * * *")) == Problem(
        "schedule", 'schedule "61 * * * *" is not a valid cron expression'
    )


@pytest.mark.parametrize("schedule", ["* * * * * *", "@daily", "tomorrow", "", "2026-13-01T00:00:00Z"])
def test_schedule_that_is_neither_five_field_cron_nor_iso_is_rejected(schedule: str) -> None:
    problem = only_problem(a_mission(schedule=schedule))
    assert problem.field == "schedule"
    assert problem.message.startswith(f'schedule "{schedule}" is neither a 5-field cron expression')


@pytest.mark.parametrize("timezone", ["Mars/Olympus", "", "../etc/passwd", "europe/rome"])
def test_unknown_timezone_is_reported_on_the_timezone_field(timezone: str) -> None:
    problem = only_problem(a_mission(schedule="0 9 * * *", timezone=timezone))
    assert problem.field == "timezone"
    assert problem.message.startswith(f'unknown timezone "{timezone}"')


def test_validate_schedule_accepts_a_good_pair_and_explains_a_bad_one() -> None:
    assert validate_schedule("0 9 * * *", "America/New_York") is None
    assert validate_schedule("2026-04-01T00:00:00Z", None) is None
    assert validate_schedule("0 9 * * *", "Nowhere/Land") == (
        'unknown timezone "Nowhere/Land"; use an IANA name such as "Europe/Rome" or "UTC"'
    )
    assert validate_schedule("nope", "UTC") is not None


# --- reporting -----------------------------------------------------------------------------


def test_every_problem_is_reported_at_once_in_document_order() -> None:
    doc = a_mission(
        qualityThreshold=9,
        schedule="soon",
        tasks=[
            {"title": "Run tests", "description": "", "assignTo": "ghost", "dependsOn": ["Deploy"]},
            {
                "title": "Deploy",
                "description": "d",
                "assignTo": "deployer",
                "dependsOn": ["Run tests", "Nope"],
            },
        ],
        qualityGates=[{"afterTasks": ["Run tests"], "blocksTasks": []}],
    )
    doc = with_agent(doc, 1, model="gpt-4o")
    assert fields(doc) == [
        "qualityThreshold",
        "schedule",
        "tasks",
        "tasks[0].description",
        "tasks[0].assignTo",
        "tasks[1].dependsOn[1]",
        "team.agents[1].model",
        "qualityGates[0].blocksTasks",
    ]


def test_same_spec_gives_the_same_problems() -> None:
    spec = MissionSpec.from_document(with_task(a_mission(), 0, dependsOn=["Deploy", "X"], assignTo="y"))
    assert validate_mission(spec) == validate_mission(spec)


def test_problem_reads_as_field_and_message() -> None:
    assert str(Problem("tasks", "a mission needs at least one task")) == "tasks: a mission needs at least one task"


def test_titles_with_quotes_are_quoted_unambiguously() -> None:
    assert format_cycle(['say "hi"', "b", 'say "hi"']) == '"say \\"hi\\"" -> "b" -> "say \\"hi\\""'


# --- find_cycle ----------------------------------------------------------------------------


def test_find_cycle_returns_none_for_a_dag() -> None:
    assert find_cycle({"c": ["b", "a"], "b": ["a"], "a": []}) is None


def test_find_cycle_treats_nodes_without_entry_as_leaves() -> None:
    assert find_cycle({"b": ["a"]}) is None


def test_find_cycle_repeats_the_first_node_at_the_end() -> None:
    assert find_cycle({"x": ["a"], "a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]


def test_find_cycle_reports_a_self_loop() -> None:
    assert find_cycle({"a": ["a"]}) == ["a", "a"]


def test_format_cycle_joins_quoted_titles_with_arrows() -> None:
    assert format_cycle(["Run tests", "Deploy", "Run tests"]) == '"Run tests" -> "Deploy" -> "Run tests"'


# --- scale ---------------------------------------------------------------------------------


def test_find_cycle_handles_a_ten_thousand_node_chain_without_recursion_error() -> None:
    edges = {f"t{i}": [f"t{i - 1}"] if i else [] for i in range(10_000)}
    assert find_cycle(edges) is None
    edges["t0"] = ["t9999"]
    cycle = find_cycle(edges)
    assert cycle is not None and len(cycle) == 10_001


def test_ten_thousand_task_mission_with_a_wide_gate_validates_quickly() -> None:
    tasks = chain(10_000)
    doc = a_mission(
        tasks=tasks,
        qualityGates=[{"afterTasks": ["t0", "t5000"], "blocksTasks": [t["title"] for t in tasks[5001:]]}],
    )
    started = time.perf_counter()
    assert problems(doc) == []
    assert time.perf_counter() - started < 2.0


# --- properties ----------------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn, min_size: int = 1) -> list[list[int]]:
    """Dependency lists where task i only depends on earlier tasks, so the graph is acyclic."""
    size = draw(st.integers(min_value=min_size, max_value=12))
    return [draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else [] for i in range(size)]


@settings(max_examples=150, deadline=None)
@given(dags())
def test_acyclic_dependencies_never_report_a_cycle(deps: list[list[int]]) -> None:
    assert problems(graph_mission(deps)) == []


@settings(max_examples=150, deadline=None)
@given(dags(min_size=2), st.data())
def test_back_edge_closing_a_cycle_is_always_reported_as_a_real_cycle(
    deps: list[list[int]], data: st.DataObject
) -> None:
    deps[-1] = deps[-1] or [0]  # at least one edge, so some back edge closes a cycle
    edges = edges_of(graph_mission(deps))
    pairs = [(a, b) for a in edges for b in edges if a != b and reaches(edges, a, b)]
    late, early = data.draw(st.sampled_from(pairs))  # late depends (transitively) on early
    deps[int(early[1:])].append(int(late[1:]))
    doc = graph_mission(deps)

    cycle = find_cycle(edges_of(doc))
    assert cycle is not None and len(cycle) >= 3 and cycle[0] == cycle[-1]
    assert all(nxt in edges_of(doc)[node] for node, nxt in itertools.pairwise(cycle))
    assert problems(doc) == [Problem("tasks", f"dependency cycle: {format_cycle(cycle)}")]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdefgh"), st.lists(st.sampled_from("abcdefgh"), max_size=3)))
def test_find_cycle_agrees_with_graphlib(edges: dict[str, list[str]]) -> None:
    try:
        tuple(graphlib.TopologicalSorter(edges).static_order())
        acyclic = True
    except graphlib.CycleError:
        acyclic = False
    cycle = find_cycle(edges)
    assert (cycle is None) == acyclic
    if cycle is not None:
        assert cycle[0] == cycle[-1]
        assert all(nxt in edges[node] for node, nxt in itertools.pairwise(cycle))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 7), unique=True, max_size=3), min_size=2, max_size=8),
    st.data(),
)
def test_gate_dependency_check_matches_reachability_even_with_cycles(
    deps: list[list[int]], data: st.DataObject
) -> None:
    deps = [[j for j in targets if j < len(deps) and j != i] for i, targets in enumerate(deps)]
    after, blocked = data.draw(st.lists(st.integers(0, len(deps) - 1), min_size=2, max_size=2, unique=True))
    doc = graph_mission(deps)
    doc["qualityGates"] = [{"afterTasks": [f"n{after}"], "blocksTasks": [f"n{blocked}"]}]
    gate_problems = [p for p in problems(doc) if p.field.startswith("qualityGates")]
    assert (gate_problems == []) == reaches(edges_of(doc), f"n{blocked}", f"n{after}")


def test_a_reusable_agent_is_validated_like_a_team_agent_with_fields_named_on_it() -> None:
    from orchestrator.spec import AgentSpec
    from orchestrator.validation import validate_agent

    agent = AgentSpec.from_document({"name": "a", "model": "gpt-4", "tools": ["shell", "nope"], "apiKeyEnv": "X"})
    problems = validate_agent(agent)
    assert [p.field for p in problems] == ["model", "apiKeyEnv", "tools[1]", "tools[0]"]
    assert validate_agent(agent, allow_commands=True, allow_mission_endpoints=True)[0].field == "model"
    assert validate_agent(AgentSpec.from_document({"name": "a", "model": "scripted/x"})) == []
