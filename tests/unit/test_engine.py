"""Example tests of the execution state machine, one or more per rule, driven only through
``start_run`` and ``decide`` the way the shell drives it."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.engine import (
    CANCELLED_BY_OPERATOR,
    UNKNOWN_OUTCOME_ERROR,
    AbortRequested,
    ApprovalTimedOut,
    AssessmentScored,
    AssessTask,
    CancelTask,
    CancelTimer,
    CheckpointTimedOut,
    DeadlineReached,
    Decision,
    DelayElapsed,
    Event,
    MissionStatus,
    PauseReason,
    PublishEvent,
    ReassessRequested,
    ResumeRequested,
    RetryDue,
    ReviewDecision,
    ReviewSubmitted,
    RunState,
    ScheduleTimer,
    StartTask,
    TaskAdded,
    TaskCancelRequested,
    TaskClaimed,
    TaskFailed,
    TaskFinished,
    TaskOutputProduced,
    TaskRemoved,
    TaskRetryRequested,
    TaskState,
    TaskStatus,
    TaskTimedOut,
    TaskUpdated,
    WorkerLost,
    decide,
    start_run,
    timer_event,
)
from orchestrator.spec import MissionSpec, TaskSpec

T0 = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
TEAM = {
    "name": "crew",
    "agents": [
        {"name": "dev", "model": "scripted/dev"},
        {"name": "senior", "model": "scripted/senior"},
        {"name": "ops", "model": "scripted/ops"},
    ],
}
JUDGED = [{"criterion": "is correct"}]

Q = TaskStatus.QUEUED
P = TaskStatus.PENDING


def mission(*tasks: Mapping[str, Any], **fields: Any) -> MissionSpec:
    """A spec from task dicts: each needs an ``id`` (also its title unless given); assignTo is ``dev``."""
    docs = [{"title": t["id"], "description": "", "assignTo": "dev", **t} for t in tasks]
    return MissionSpec.from_document({"name": "m", "team": TEAM, **fields, "tasks": docs})


def task_spec(**fields: Any) -> TaskSpec:
    return TaskSpec.from_document({"title": fields["id"], "description": "", "assignTo": "dev", **fields})


class Run:
    """Drives one run as the shell would, keeping the latest decision."""

    def __init__(self, spec: MissionSpec, now: datetime = T0) -> None:
        self.now = now
        self.last = start_run("run_1", "msn_1", spec, now)
        self.state = self.last.state

    def send(self, event: Event, *, after: float = 0) -> Decision:
        self.now += timedelta(seconds=after)
        self.last = decide(self.state, event, self.now)
        self.state = self.last.state
        return self.last

    def task(self, task_id: str) -> TaskState:
        return self.state.tasks[task_id]

    def attempt(self, task_id: str) -> int:
        return self.task(task_id).attempt

    def claim(self, task_id: str) -> Decision:
        return self.send(TaskClaimed(task_id, self.attempt(task_id), "worker-1"))

    def finish(self, task_id: str, output: str = "done") -> Decision:
        if self.task(task_id).status is Q:
            self.claim(task_id)
        return self.send(TaskFinished(task_id, self.attempt(task_id), output))

    def fail(self, task_id: str, error: str = "boom") -> Decision:
        if self.task(task_id).status is Q:
            self.claim(task_id)
        return self.send(TaskFailed(task_id, self.attempt(task_id), error))

    def score(self, task_id: str, score: float | None, *reasons: str, error: str | None = None) -> Decision:
        criteria = tuple({"criterion": "is correct", "score": score, "reason": r} for r in reasons)
        return self.send(AssessmentScored(task_id, self.attempt(task_id), score, criteria, error))

    def complete(self, task_id: str, score: float | None = None) -> Decision:
        decision = self.finish(task_id)
        if self.task(task_id).status is TaskStatus.ASSESSING:
            decision = self.score(task_id, score if score is not None else 5.0)
        return decision

    def statuses(self) -> dict[str, str]:
        return {tid: t.status.value for tid, t in self.state.tasks.items()}


def published(decision: Decision, kind: str) -> list[Mapping[str, Any]]:
    return [e.data for e in decision.effects if isinstance(e, PublishEvent) and e.type == kind]


def started(decision: Decision) -> list[StartTask]:
    return [e for e in decision.effects if isinstance(e, StartTask)]


def of(decision: Decision, kind: type) -> list[Any]:
    return [e for e in decision.effects if isinstance(e, kind)]


def assert_ignored(run: Run, event: Event, *, after: float = 0) -> None:
    before = run.state
    decision = run.send(event, after=after)
    assert decision.ignored
    assert decision.effects == ()
    assert decision.state is before


# ---------------------------------------------------------------------------------- start_run


def test_starting_a_run_makes_it_active_and_announces_it() -> None:
    run = Run(mission({"id": "t1"}, {"id": "t2", "dependsOn": ["t1"]}))
    assert run.state.status is MissionStatus.ACTIVE
    assert run.state.started_at == T0
    assert published(run.last, "mission:status") == [{"missionId": "msn_1", "runId": "run_1", "status": "active"}]


def test_tasks_without_dependencies_are_queued_at_start_as_attempt_one() -> None:
    run = Run(mission({"id": "t1"}, {"id": "t2", "assignTo": "ops"}))
    assert started(run.last) == [StartTask("t1", 1, "dev", "scripted/dev"), StartTask("t2", 1, "ops", "scripted/ops")]
    assert run.task("t1").status is Q and run.task("t1").attempt == 1
    assert published(run.last, "task:status")[0] == {
        "missionId": "msn_1",
        "runId": "run_1",
        "taskId": "t1",
        "title": "t1",
        "status": "queued",
        "attempt": 1,
        "agent": "dev",
        "model": "scripted/dev",
    }


def test_dependent_task_waits_pending_until_its_dependency_completes() -> None:
    run = Run(mission({"id": "t1"}, {"id": "t2", "dependsOn": ["t1"]}))
    assert run.task("t2").status is P and run.task("t2").attempt == 0
    decision = run.complete("t1")
    assert started(decision) == [StartTask("t2", 1, "dev", "scripted/dev")]


def test_deadline_timer_is_armed_at_start() -> None:
    deadline = T0 + timedelta(hours=1)
    run = Run(mission({"id": "t1"}, deadline="2026-04-01T13:00:00Z"))
    assert ScheduleTimer("deadline", "run", deadline) in run.last.effects


def test_run_started_after_its_deadline_fails_at_once_without_starting_tasks() -> None:
    run = Run(mission({"id": "t1"}, deadline="2026-04-01T11:00:00Z"))
    assert run.state.status is MissionStatus.FAILED
    assert run.state.failure_reason == "deadline_exceeded"
    assert started(run.last) == []
    assert run.task("t1").status is TaskStatus.CANCELLED


def test_project_agent_outside_the_team_is_started_with_an_empty_model_for_the_shell_to_fill() -> None:
    run = Run(mission({"id": "t1", "assignTo": "shared-researcher"}))
    assert started(run.last) == [StartTask("t1", 1, "shared-researcher", "")]


def test_mission_without_tasks_completes_at_once() -> None:
    run = Run(mission())
    assert run.state.status is MissionStatus.COMPLETED


def test_spec_without_task_ids_is_a_broken_invariant() -> None:
    spec = MissionSpec.from_document({"name": "m", "tasks": [{"title": "a", "description": "", "assignTo": "dev"}]})
    with pytest.raises(ValueError, match="no id"):
        start_run("run_1", "msn_1", spec, T0)


def test_naive_now_is_a_broken_invariant() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        start_run("run_1", "msn_1", mission({"id": "t1"}), datetime(2026, 1, 1))


# -------------------------------------------------------------------- ready, priority, limits


def test_ready_tasks_start_highest_priority_first_with_ties_in_document_order() -> None:
    run = Run(
        mission(
            {"id": "t1", "priority": 1},
            {"id": "t2", "priority": 5},
            {"id": "t3", "priority": 1},
            {"id": "t4", "priority": 9},
        )
    )
    assert [s.task_id for s in started(run.last)] == ["t4", "t2", "t1", "t3"]


def test_mission_max_concurrency_limits_queued_and_running_tasks_and_a_finish_frees_a_slot() -> None:
    run = Run(mission({"id": "t1"}, {"id": "t2"}, {"id": "t3", "priority": 3}, maxConcurrency=2))
    assert [s.task_id for s in started(run.last)] == ["t3", "t1"]
    run.claim("t3")
    assert started(run.last) == []
    decision = run.complete("t3")
    assert [s.task_id for s in started(decision)] == ["t2"]


def test_agent_max_concurrency_lets_a_lower_priority_task_of_a_free_agent_start_first() -> None:
    team = {
        "name": "crew",
        "agents": [
            {"name": "dev", "model": "scripted/dev", "maxConcurrency": 1},
            {"name": "ops", "model": "scripted/ops"},
        ],
    }
    run = Run(
        mission(
            {"id": "t1", "priority": 9},
            {"id": "t2", "priority": 8},
            {"id": "t3", "priority": 1, "assignTo": "ops"},
            team=team,
        )
    )
    assert [s.task_id for s in started(run.last)] == ["t1", "t3"]
    assert run.task("t2").status is P
    decision = run.complete("t1")
    assert [s.task_id for s in started(decision)] == ["t2"]


def test_tasks_being_assessed_do_not_count_against_concurrency() -> None:
    run = Run(mission({"id": "t1", "expectations": JUDGED}, {"id": "t2"}, maxConcurrency=1))
    decision = run.finish("t1")
    assert run.task("t1").status is TaskStatus.ASSESSING
    assert [s.task_id for s in started(decision)] == ["t2"]


def test_a_dependent_starts_as_soon_as_its_own_dependencies_complete_without_waiting_for_siblings() -> None:
    run = Run(mission({"id": "a"}, {"id": "b"}, {"id": "a2", "dependsOn": ["a"]}))
    decision = run.complete("a")
    assert [s.task_id for s in started(decision)] == ["a2"]
    assert run.task("b").status is Q


# ------------------------------------------------------------------------------- claim, output


def test_claimed_task_is_running_and_its_timeout_is_armed_from_the_claim() -> None:
    run = Run(mission({"id": "t1", "timeout": 30}))
    decision = run.claim("t1")
    assert run.task("t1").status is TaskStatus.RUNNING
    assert run.task("t1").worker == "worker-1" and run.task("t1").started_at == T0
    assert published(decision, "task:status")[0]["status"] == "running"
    assert ScheduleTimer("timeout", "t1:1", T0 + timedelta(seconds=30)) in decision.effects


def test_claim_of_a_task_without_timeout_arms_no_timer() -> None:
    run = Run(mission({"id": "t1"}))
    assert of(run.claim("t1"), ScheduleTimer) == []


def test_duplicate_claim_is_ignored() -> None:
    run = Run(mission({"id": "t1"}))
    run.claim("t1")
    assert_ignored(run, TaskClaimed("t1", 1, "worker-2"))


def test_output_of_the_running_attempt_is_relayed_as_task_output_without_changing_state() -> None:
    run = Run(mission({"id": "t1"}))
    run.claim("t1")
    before = run.state
    decision = run.send(TaskOutputProduced("t1", 1, "hello "))
    assert decision.state is before
    assert decision.effects == (
        PublishEvent(
            "task:output", {"missionId": "msn_1", "runId": "run_1", "taskId": "t1", "attempt": 1, "chunk": "hello "}
        ),
    )


def test_output_of_an_attempt_that_is_not_running_is_ignored() -> None:
    run = Run(mission({"id": "t1"}))
    assert_ignored(run, TaskOutputProduced("t1", 1, "too early"))
    run.claim("t1")
    assert_ignored(run, TaskOutputProduced("t1", 2, "wrong attempt"))


# ------------------------------------------------------------------------- finish, assessment


def test_finished_task_without_expectations_completes_unscored_with_its_output() -> None:
    run = Run(mission({"id": "t1", "timeout": 30}, {"id": "t2"}))
    run.claim("t1")
    decision = run.finish("t1", "the answer")
    task = run.task("t1")
    assert (task.status, task.score, task.output, task.finished_at) == (TaskStatus.COMPLETED, None, "the answer", T0)
    assert CancelTimer("timeout", "t1:1") in decision.effects
    assert of(decision, AssessTask) == []


def test_finished_task_with_expectations_is_assessed() -> None:
    run = Run(mission({"id": "t1", "expectations": JUDGED}))
    decision = run.finish("t1", "draft")
    assert run.task("t1").status is TaskStatus.ASSESSING
    assert of(decision, AssessTask) == [AssessTask("t1", 1, "draft")]
    assert published(decision, "task:status")[-1]["status"] == "assessing"


def test_score_at_the_quality_threshold_completes_the_task_and_publishes_the_assessment() -> None:
    run = Run(mission({"id": "t1", "expectations": JUDGED}, qualityThreshold=4.0))
    run.finish("t1")
    decision = run.score("t1", 4.0, "solid")
    assert run.task("t1").status is TaskStatus.COMPLETED and run.task("t1").score == 4.0
    assert published(decision, "task:assessment") == [
        {
            "missionId": "msn_1",
            "runId": "run_1",
            "taskId": "t1",
            "attempt": 1,
            "score": 4.0,
            "threshold": 4.0,
            "passed": True,
            "criteria": [{"criterion": "is correct", "score": 4.0, "reason": "solid"}],
        }
    ]


def test_score_below_threshold_is_a_failed_attempt_whose_judge_reasons_reach_the_retry() -> None:
    run = Run(mission({"id": "t1", "expectations": JUDGED}, qualityThreshold=4.0))
    run.finish("t1")
    decision = run.score("t1", 2.5, "misses the edge cases")
    assert published(decision, "task:assessment")[0]["passed"] is False
    task = run.task("t1")
    assert task.failed_attempts == 1 and task.attempt == 2 and task.status is Q
    assert any("below the quality threshold" in f for f in task.feedback)
    assert any("misses the edge cases" in f for f in task.feedback)


def test_judge_error_is_a_failed_attempt_with_the_error_in_the_feedback() -> None:
    run = Run(mission({"id": "t1", "expectations": JUDGED}))
    run.finish("t1")
    decision = run.score("t1", None, error="scripted judge has no script")
    assert published(decision, "task:assessment")[0]["passed"] is False
    assert run.task("t1").failed_attempts == 1
    assert any("scripted judge has no script" in f for f in run.task("t1").feedback)


def test_late_assessment_of_an_old_attempt_is_ignored() -> None:
    run = Run(mission({"id": "t1", "expectations": JUDGED}))
    run.finish("t1")
    run.score("t1", 1.0)
    assert_ignored(run, AssessmentScored("t1", 1, 5.0))


# ----------------------------------------------------------------------- failures and retries


def test_failed_attempt_is_retried_as_a_new_attempt_with_the_error_in_its_feedback() -> None:
    run = Run(mission({"id": "t1"}))
    decision = run.fail("t1", "rate limited")
    assert started(decision) == [StartTask("t1", 2, "dev", "scripted/dev")]
    task = run.task("t1")
    assert task.failed_attempts == 1 and task.attempt == 2
    assert task.feedback == ("Attempt 1 failed: rate limited",)
    first = published(decision, "task:status")[0]
    assert (first["status"], first["attempt"], first["error"]) == ("pending", 1, "rate limited")


def test_task_fails_after_one_plus_max_retries_attempts() -> None:
    run = Run(mission({"id": "t1", "maxRetries": 2}))
    run.fail("t1")
    run.fail("t1")
    decision = run.fail("t1", "still broken")
    task = run.task("t1")
    assert (task.status, task.attempt, task.failed_attempts) == (TaskStatus.FAILED, 3, 3)
    assert published(decision, "task:status")[0]["error"] == "still broken"


def test_timed_out_attempt_is_cancelled_and_counts_as_a_failure() -> None:
    run = Run(mission({"id": "t1", "timeout": 10, "maxRetries": 0}))
    run.claim("t1")
    decision = run.send(TaskTimedOut("t1", 1), after=10)
    assert CancelTask("t1", 1, "timeout") in decision.effects
    assert run.task("t1").status is TaskStatus.FAILED
    assert run.task("t1").error == "timed out after 10 seconds"


def test_backoff_delays_the_retry_until_its_timer_fires() -> None:
    run = Run(mission({"id": "t1", "retryPolicy": {"backoff": 60}}))
    decision = run.fail("t1")
    assert run.task("t1").status is P and run.task("t1").retry_at == T0 + timedelta(seconds=60)
    assert ScheduleTimer("retry", "t1:2", T0 + timedelta(seconds=60)) in decision.effects
    assert started(decision) == []
    decision = run.send(RetryDue("t1", 2), after=60)
    assert started(decision) == [StartTask("t1", 2, "dev", "scripted/dev")]


def test_retry_due_for_another_attempt_or_twice_is_ignored() -> None:
    run = Run(mission({"id": "t1", "retryPolicy": {"backoff": 60}}))
    run.fail("t1")
    assert_ignored(run, RetryDue("t1", 3))
    run.send(RetryDue("t1", 2), after=60)
    assert_ignored(run, RetryDue("t1", 2))


def test_a_retry_whose_backoff_is_over_starts_with_the_next_decision_even_before_its_timer_fires() -> None:
    run = Run(mission({"id": "t1", "retryPolicy": {"backoff": 5}}, {"id": "t2"}))
    run.fail("t1")
    assert started(run.claim("t2")) == []
    run.send(TaskFinished("t2", 1, "done"), after=5)  # any decision once the backoff is over
    assert run.task("t1").status is Q and run.task("t1").attempt == 2
    assert CancelTimer("retry", "t1:2") in run.last.effects
    assert_ignored(run, RetryDue("t1", 2))


def test_escalate_after_switches_agent_and_model_within_the_retry_budget() -> None:
    policy = {"fallbackAgent": "senior", "escalateModel": "openai/gpt-big", "escalateAfter": 1}
    run = Run(mission({"id": "t1", "maxRetries": 2, "retryPolicy": policy}))
    assert started(run.last) == [StartTask("t1", 1, "dev", "scripted/dev")]
    assert started(run.fail("t1")) == [StartTask("t1", 2, "senior", "openai/gpt-big")]
    assert started(run.fail("t1")) == [StartTask("t1", 3, "senior", "openai/gpt-big")]
    run.fail("t1")
    assert run.task("t1").status is TaskStatus.FAILED and run.task("t1").attempt == 3


def test_escalation_without_escalate_after_adds_one_final_attempt_after_the_normal_ones() -> None:
    run = Run(mission({"id": "t1", "maxRetries": 1, "retryPolicy": {"fallbackAgent": "senior"}}))
    assert started(run.fail("t1")) == [StartTask("t1", 2, "dev", "scripted/dev")]
    assert started(run.fail("t1")) == [StartTask("t1", 3, "senior", "scripted/senior")]
    run.fail("t1")
    assert run.task("t1").status is TaskStatus.FAILED and run.task("t1").failed_attempts == 3


def test_escalate_model_alone_keeps_the_assigned_agent() -> None:
    run = Run(mission({"id": "t1", "maxRetries": 0, "retryPolicy": {"escalateModel": "anthropic/opus"}}))
    assert started(run.fail("t1")) == [StartTask("t1", 2, "dev", "anthropic/opus")]


def test_fallback_to_a_project_agent_outside_the_team_leaves_the_model_to_the_shell() -> None:
    run = Run(mission({"id": "t1", "maxRetries": 0, "retryPolicy": {"fallbackAgent": "project-expert"}}))
    assert started(run.fail("t1")) == [StartTask("t1", 2, "project-expert", "")]


def test_escalate_after_beyond_the_retry_budget_never_escalates() -> None:
    run = Run(mission({"id": "t1", "maxRetries": 1, "retryPolicy": {"fallbackAgent": "senior", "escalateAfter": 5}}))
    assert started(run.fail("t1")) == [StartTask("t1", 2, "dev", "scripted/dev")]
    run.fail("t1")
    assert run.task("t1").status is TaskStatus.FAILED


# ----------------------------------------------------------------------- exhaustion and skips


def test_dependent_is_skipped_when_upstream_exhausts_retries() -> None:
    run = Run(
        mission(
            {"id": "t1", "maxRetries": 0},
            {"id": "t2", "dependsOn": ["t1"]},
            {"id": "t3", "dependsOn": ["t2"]},
        )
    )
    decision = run.fail("t1")
    assert run.statuses() == {"t1": "failed", "t2": "skipped", "t3": "skipped"}
    skipped = [d for d in published(decision, "task:status") if d["status"] == "skipped"]
    assert [d["taskId"] for d in skipped] == ["t2", "t3"]
    assert run.task("t2").error == 'dependency "t1" failed'


def test_independent_branch_finishes_after_another_branch_failed_and_the_run_fails() -> None:
    run = Run(
        mission(
            {"id": "a", "maxRetries": 0},
            {"id": "a2", "dependsOn": ["a"]},
            {"id": "b"},
            {"id": "b2", "dependsOn": ["b"]},
        )
    )
    run.fail("a")
    assert run.state.status is MissionStatus.ACTIVE
    run.complete("b")
    decision = run.complete("b2")
    assert run.statuses() == {"a": "failed", "a2": "skipped", "b": "completed", "b2": "completed"}
    assert run.state.status is MissionStatus.FAILED and run.state.failure_reason == "task_failed"
    assert published(decision, "mission:done")[0]["summary"] == {
        "completed": 2,
        "failed": 1,
        "skipped": 1,
        "cancelled": 0,
    }


# ------------------------------------------------------------------------------- worker loss


def test_lost_worker_reruns_the_attempt_without_counting_a_failure() -> None:
    run = Run(mission({"id": "t1", "timeout": 30}))
    run.claim("t1")
    decision = run.send(WorkerLost("t1", 1))
    assert started(decision) == [StartTask("t1", 2, "dev", "scripted/dev")]
    assert CancelTask("t1", 1, "worker_lost") in decision.effects
    assert CancelTimer("timeout", "t1:1") in decision.effects
    assert run.task("t1").failed_attempts == 0 and run.task("t1").attempt == 2


def test_lost_worker_of_a_running_side_effecting_task_waits_for_approval_and_pauses_the_run() -> None:
    run = Run(mission({"id": "deploy", "sideEffects": True}, {"id": "other"}))
    run.claim("deploy")
    decision = run.send(WorkerLost("deploy", 1))
    assert started(decision) == []
    assert run.task("deploy").status is TaskStatus.AWAITING_APPROVAL
    assert run.state.status is MissionStatus.PAUSED and run.state.pause_reason is PauseReason.APPROVAL
    assert run.state.pause_message is not None and '"deploy"' in run.state.pause_message
    status = published(decision, "mission:status")[0]
    assert (status["status"], status["pauseReason"]) == ("paused", "approval")


def test_lost_worker_of_a_side_effecting_task_that_was_never_claimed_reruns_it() -> None:
    run = Run(mission({"id": "deploy", "sideEffects": True}))
    decision = run.send(WorkerLost("deploy", 1))
    assert started(decision) == [StartTask("deploy", 2, "dev", "scripted/dev")]
    assert run.state.status is MissionStatus.ACTIVE


def test_lost_worker_during_assessment_asks_for_the_assessment_again() -> None:
    run = Run(mission({"id": "t1", "expectations": JUDGED}))
    run.finish("t1", "draft")
    decision = run.send(WorkerLost("t1", 1))
    assert decision.effects == (AssessTask("t1", 1, "draft"),)
    assert run.task("t1").status is TaskStatus.ASSESSING


# -------------------------------------------------------------------------------------- gates


def gated(min_score: float | None = 4.0, require_all: bool = False, **after: Any) -> MissionSpec:
    gate: dict[str, Any] = {
        "name": "quality",
        "afterTasks": ["a", "b"],
        "blocksTasks": ["c"],
        "requireAllPassed": require_all,
    }
    if min_score is not None:
        gate["minScore"] = min_score
    return mission(
        {"id": "a", "expectations": JUDGED, **after},
        {"id": "b", "expectations": JUDGED, **after},
        {"id": "c", "dependsOn": ["a", "b"]},
        qualityGates=[gate],
    )


def test_gate_passes_when_the_mean_score_reaches_min_score_and_its_blocked_tasks_start() -> None:
    run = Run(gated(min_score=4.0))
    run.complete("a", 3.5)
    decision = run.complete("b", 4.5)
    assert started(decision) == [StartTask("c", 1, "dev", "scripted/dev")]
    assert run.state.gates[0] == "passed"


def test_gate_blocks_and_pauses_the_run_when_the_mean_score_is_below_min_score() -> None:
    run = Run(gated(min_score=4.0))
    run.complete("a", 3.0)
    decision = run.complete("b", 4.0)
    assert started(decision) == []
    assert published(decision, "gate:blocked") == [
        {
            "missionId": "msn_1",
            "runId": "run_1",
            "gate": 0,
            "name": "quality",
            "afterTasks": ["a", "b"],
            "blocksTasks": ["c"],
            "score": 3.5,
            "minScore": 4.0,
            "requireAllPassed": False,
            "reason": "mean score 3.50 is below minScore 4",
        }
    ]
    assert run.state.status is MissionStatus.PAUSED and run.state.pause_reason is PauseReason.QUALITY_GATE
    status = published(decision, "mission:status")[0]
    assert status["pauseReason"] == "quality_gate" and "blocked" in status["pauseMessage"]
    assert run.task("c").status is P


def test_unscored_after_tasks_do_not_count_in_the_gate_mean() -> None:
    spec = mission(
        {"id": "a", "expectations": JUDGED},
        {"id": "b"},
        {"id": "c", "dependsOn": ["a", "b"]},
        qualityGates=[{"afterTasks": ["a", "b"], "blocksTasks": ["c"], "minScore": 4.0}],
    )
    run = Run(spec)
    run.complete("b")
    decision = run.complete("a", 4.0)
    assert started(decision) == [StartTask("c", 1, "dev", "scripted/dev")]


def test_gate_with_min_score_blocks_when_no_after_task_has_a_score() -> None:
    spec = mission(
        {"id": "a"},
        {"id": "c", "dependsOn": ["a"]},
        qualityGates=[{"afterTasks": ["a"], "blocksTasks": ["c"], "minScore": 3.0}],
    )
    run = Run(spec)
    decision = run.complete("a")
    blocked = published(decision, "gate:blocked")[0]
    assert blocked["score"] is None and "none of its afterTasks has a score" in blocked["reason"]
    assert run.state.status is MissionStatus.PAUSED


def test_a_gate_after_a_task_that_exhausted_its_retries_does_not_pause_and_the_run_fails() -> None:
    # The gate blocks only "c", which was skipped because "b" failed for good: there is nothing to
    # hold, so the gate must not turn the failure into a pause (DESIGN §4: the mission fails).
    run = Run(gated(min_score=None, require_all=True, maxRetries=0))
    run.complete("a", 5.0)
    run.finish("b")
    decision = run.score("b", 1.0)
    assert run.task("b").status is TaskStatus.FAILED and run.task("c").status is TaskStatus.SKIPPED
    assert '"b" failed' in published(decision, "gate:blocked")[0]["reason"]
    assert run.state.gates[0] == "blocked"
    assert run.state.status is MissionStatus.FAILED and run.state.failure_reason == "task_failed"
    assert [d["status"] for d in published(decision, "mission:status")] == ["failed"]
    assert published(decision, "mission:done")[0]["status"] == "failed"


def test_the_public_deploy_pipeline_without_a_provider_key_ends_failed_not_paused() -> None:
    # DEPLOY_PIPELINE's shape: every attempt of "Run tests" fails (no provider key), its gate
    # (minScore, requireAllPassed) blocks "Deploy to staging", already skipped.
    spec = mission(
        {"id": "tests", "maxRetries": 2, "expectations": JUDGED},
        {"id": "deploy", "dependsOn": ["tests"], "sideEffects": True},
        qualityThreshold=4.0,
        qualityGates=[{"afterTasks": ["tests"], "blocksTasks": ["deploy"], "minScore": 4.0, "requireAllPassed": True}],
    )
    run = Run(spec)
    for _ in range(3):
        decision = run.fail("tests", "ANTHROPIC_API_KEY is not set")
    assert run.statuses() == {"tests": "failed", "deploy": "skipped"}
    assert run.state.status is MissionStatus.FAILED
    assert published(decision, "mission:done")[0]["reason"] == "task_failed"


def test_a_gate_pause_is_lifted_when_the_tasks_it_holds_are_skipped_for_another_reason() -> None:
    spec = mission(
        {"id": "a", "expectations": JUDGED},
        {"id": "d", "maxRetries": 0},
        {"id": "c", "dependsOn": ["a", "d"]},
        qualityGates=[{"afterTasks": ["a"], "blocksTasks": ["c"], "minScore": 4.0}],
    )
    run = Run(spec)
    run.complete("a", 3.0)
    assert run.state.status is MissionStatus.PAUSED  # "c" could still run once a person decides
    decision = run.fail("d")
    assert run.task("c").status is TaskStatus.SKIPPED
    assert [d["status"] for d in published(decision, "mission:status")] == ["active", "failed"]
    assert run.state.status is MissionStatus.FAILED


def test_a_gate_pause_stays_while_a_checkpoint_also_waits() -> None:
    spec = mission(
        {"id": "a", "expectations": JUDGED},
        {"id": "d", "maxRetries": 0},
        {"id": "e"},
        {"id": "c", "dependsOn": ["a", "d"]},
        {"id": "f", "dependsOn": ["e"]},
        qualityGates=[{"afterTasks": ["a"], "blocksTasks": ["c"], "minScore": 4.0}],
        checkpoints=[{"afterTasks": ["e"], "blocksTasks": ["f"], "message": "look at e"}],
    )
    run = Run(spec)
    run.complete("e")
    run.complete("a", 3.0)
    run.fail("d")
    assert run.state.status is MissionStatus.PAUSED and run.state.checkpoints[0] == "waiting"


def test_gate_waits_until_every_after_task_is_terminal() -> None:
    run = Run(gated(min_score=4.0))
    decision = run.complete("a", 1.0)
    assert published(decision, "gate:blocked") == []
    assert run.state.status is MissionStatus.ACTIVE


def test_resume_without_retry_failed_overrides_a_blocked_gate() -> None:
    run = Run(gated(min_score=4.0))
    run.complete("a", 3.0)
    run.complete("b", 3.0)
    decision = run.send(ResumeRequested(retry_failed=False))
    assert run.state.gates[0] == "overridden"
    assert started(decision) == [StartTask("c", 1, "dev", "scripted/dev")]
    run.complete("c")
    assert run.state.status is MissionStatus.COMPLETED


def test_resume_with_retry_failed_reruns_low_scoring_after_tasks_with_a_fresh_budget_and_judges_the_gate_again() -> (
    None
):
    run = Run(gated(min_score=4.5))
    run.complete("a", 5.0)
    run.finish("b")
    run.score("b", 2.0, "too shallow")  # below the quality threshold 3.0: a failed attempt
    run.complete("b", 3.0)  # passes the threshold, but the gate's mean 4.0 is below 4.5
    assert run.state.status is MissionStatus.PAUSED
    assert run.task("b").failed_attempts == 1
    decision = run.send(ResumeRequested(retry_failed=True))
    assert started(decision) == [StartTask("b", 3, "dev", "scripted/dev")]
    assert run.task("b").failed_attempts == 0
    assert any("too low for quality gate" in f for f in run.task("b").feedback)
    assert run.task("a").attempt == 1  # a scored well: not re-run
    decision = run.complete("b", 5.0)
    assert run.state.gates[0] == "passed"
    assert started(decision) == [StartTask("c", 1, "dev", "scripted/dev")]


def test_resume_with_retry_failed_reruns_a_failed_after_task_and_unskips_its_dependents() -> None:
    run = Run(gated(min_score=None, require_all=True, maxRetries=0))
    run.complete("a", 5.0)
    run.finish("b")
    run.score("b", 1.0)
    decision = run.send(ResumeRequested(retry_failed=True))
    assert run.task("b").status is Q and run.task("b").attempt == 2
    assert run.task("c").status is P
    assert ("c", "pending") in [(d["taskId"], d["status"]) for d in published(decision, "task:status")]
    run.complete("b", 4.0)
    run.complete("c")
    assert run.state.status is MissionStatus.COMPLETED


def test_a_gate_that_cannot_pass_after_a_retry_blocks_again() -> None:
    spec = mission(
        {"id": "a"},
        {"id": "c", "dependsOn": ["a"]},
        qualityGates=[{"afterTasks": ["a"], "blocksTasks": ["c"], "minScore": 3.0}],
    )
    run = Run(spec)
    run.complete("a")
    decision = run.send(ResumeRequested(retry_failed=True))
    assert len(published(decision, "gate:blocked")) == 1
    assert run.state.status is MissionStatus.PAUSED


# -------------------------------------------------------------------------------- checkpoints


def checkpointed() -> MissionSpec:
    return mission(
        {"id": "a"},
        {"id": "slow"},
        {"id": "b", "dependsOn": ["a"]},
        {"id": "other"},
        checkpoints=[{"name": "review", "afterTasks": ["a"], "blocksTasks": ["b"], "message": "Check a before b"}],
        maxConcurrency=2,
    )


def test_checkpoint_pauses_the_run_when_its_after_tasks_complete() -> None:
    run = Run(checkpointed())
    decision = run.complete("a")
    assert published(decision, "checkpoint:waiting") == [
        {
            "missionId": "msn_1",
            "runId": "run_1",
            "checkpoint": 0,
            "name": "review",
            "message": "Check a before b",
            "afterTasks": ["a"],
        }
    ]
    assert run.state.status is MissionStatus.PAUSED
    assert (run.state.pause_reason, run.state.pause_message) == (PauseReason.CHECKPOINT, "Check a before b")
    assert published(decision, "mission:status") == [
        {
            "missionId": "msn_1",
            "runId": "run_1",
            "status": "paused",
            "pauseReason": "checkpoint",
            "pauseMessage": "Check a before b",
        }
    ]
    assert started(decision) == []


def test_running_tasks_keep_running_while_paused_but_nothing_new_starts() -> None:
    run = Run(checkpointed())
    run.claim("slow")
    run.complete("a")
    run.send(TaskOutputProduced("slow", 1, "still going"))
    assert published(run.last, "task:output")
    decision = run.finish("slow")
    assert run.task("slow").status is TaskStatus.COMPLETED
    assert started(decision) == []
    assert run.task("other").status is P


def test_resume_approves_the_checkpoint_and_starts_what_is_ready() -> None:
    run = Run(checkpointed())
    run.complete("a")
    decision = run.send(ResumeRequested(retry_failed=False))
    assert run.state.status is MissionStatus.ACTIVE and run.state.pause_reason is None
    assert published(decision, "mission:status") == [{"missionId": "msn_1", "runId": "run_1", "status": "active"}]
    assert [s.task_id for s in started(decision)] == ["b"]
    assert run.state.checkpoints[0] == "approved"
    run.complete("b")
    assert run.state.status is MissionStatus.ACTIVE  # an approved checkpoint never pauses again


def test_a_checkpoint_after_the_last_task_holds_the_run_open_until_resumed() -> None:
    run = Run(mission({"id": "a"}, checkpoints=[{"afterTasks": ["a"], "message": "Sign off"}]))
    run.complete("a")
    assert run.state.status is MissionStatus.PAUSED
    run.send(ResumeRequested(retry_failed=False))
    assert run.state.status is MissionStatus.COMPLETED


def test_tasks_blocked_by_a_checkpoint_that_can_no_longer_be_reached_are_skipped() -> None:
    spec = mission(
        {"id": "a", "maxRetries": 0},
        {"id": "b"},
        checkpoints=[{"name": "cp", "afterTasks": ["a"], "blocksTasks": ["b"], "message": "m"}],
    )
    run = Run(spec)
    assert run.task("b").status is P
    run.fail("a")
    assert run.task("b").status is TaskStatus.SKIPPED
    assert run.state.status is MissionStatus.FAILED


# ------------------------------------------------------------------------------------ resume


def test_resume_is_ignored_unless_the_run_is_paused() -> None:
    run = Run(mission({"id": "t1"}))
    assert_ignored(run, ResumeRequested(retry_failed=True))


def test_resume_with_retry_failed_reruns_every_failed_task_not_only_those_of_a_gate() -> None:
    run = Run(
        mission(
            {"id": "x", "maxRetries": 0},
            {"id": "x2", "dependsOn": ["x"]},
            {"id": "a"},
            {"id": "b", "dependsOn": ["a"]},
            checkpoints=[{"afterTasks": ["a"], "message": "look"}],
        )
    )
    run.fail("x")
    run.complete("a")
    assert run.state.status is MissionStatus.PAUSED
    decision = run.send(ResumeRequested(retry_failed=True))
    assert sorted(s.task_id for s in started(decision)) == ["b", "x"]
    assert run.task("x").attempt == 2 and run.task("x").failed_attempts == 0
    assert run.task("x2").status is P


def test_resume_with_retry_failed_reruns_a_task_awaiting_approval() -> None:
    run = Run(mission({"id": "deploy", "sideEffects": True}))
    run.claim("deploy")
    run.send(WorkerLost("deploy", 1))
    decision = run.send(ResumeRequested(retry_failed=True))
    assert started(decision) == [StartTask("deploy", 2, "dev", "scripted/dev")]
    assert run.task("deploy").failed_attempts == 0


def test_resume_without_retry_failed_fails_a_task_awaiting_approval_and_skips_its_dependents() -> None:
    run = Run(mission({"id": "deploy", "sideEffects": True}, {"id": "notify", "dependsOn": ["deploy"]}))
    run.claim("deploy")
    run.send(WorkerLost("deploy", 1))
    run.send(ResumeRequested(retry_failed=False))
    assert run.task("deploy").status is TaskStatus.FAILED
    assert run.task("deploy").error == UNKNOWN_OUTCOME_ERROR
    assert run.task("notify").status is TaskStatus.SKIPPED
    assert run.state.status is MissionStatus.FAILED


def test_a_new_cause_while_paused_becomes_the_pause_reason_and_one_resume_settles_every_cause() -> None:
    run = Run(
        mission(
            {"id": "a"},
            {"id": "deploy", "sideEffects": True},
            {"id": "b", "dependsOn": ["a"]},
            checkpoints=[{"afterTasks": ["a"], "blocksTasks": ["b"], "message": "Check a"}],
        )
    )
    run.claim("deploy")
    run.complete("a")
    assert run.state.pause_reason is PauseReason.CHECKPOINT
    run.send(WorkerLost("deploy", 1))
    assert run.state.pause_reason is PauseReason.APPROVAL
    decision = run.send(ResumeRequested(retry_failed=True))
    assert sorted(s.task_id for s in started(decision)) == ["b", "deploy"]
    assert run.state.checkpoints[0] == "approved"


# ------------------------------------------------------------------------- abort and deadline


def test_abort_cancels_in_flight_attempts_and_every_unfinished_task() -> None:
    run = Run(
        mission(
            {"id": "done"},
            {"id": "running", "timeout": 60},
            {"id": "judged", "expectations": JUDGED},
            {"id": "later", "dependsOn": ["done", "running"]},
            deadline="2026-04-02T00:00:00Z",
        )
    )
    run.complete("done")
    run.claim("running")
    run.finish("judged")
    decision = run.send(AbortRequested())
    assert of(decision, CancelTask) == [CancelTask("running", 1, "aborted"), CancelTask("judged", 1, "aborted")]
    assert CancelTimer("timeout", "running:1") in decision.effects
    assert CancelTimer("deadline", "run") in decision.effects
    assert run.statuses() == {"done": "completed", "running": "cancelled", "judged": "cancelled", "later": "cancelled"}
    assert run.state.status is MissionStatus.CANCELLED and run.state.failure_reason == "aborted"
    assert published(decision, "mission:status")[0] == {
        "missionId": "msn_1",
        "runId": "run_1",
        "status": "cancelled",
        "reason": "aborted",
    }
    assert published(decision, "mission:done")[0]["summary"] == {
        "completed": 1,
        "failed": 0,
        "skipped": 0,
        "cancelled": 3,
    }


def test_abort_cancels_a_waiting_retry_timer() -> None:
    run = Run(mission({"id": "t1", "retryPolicy": {"backoff": 30}}))
    run.fail("t1")
    decision = run.send(AbortRequested())
    assert CancelTimer("retry", "t1:2") in decision.effects


def test_abort_of_a_paused_run_cancels_it() -> None:
    run = Run(
        mission({"id": "a"}, {"id": "b", "dependsOn": ["a"]}, checkpoints=[{"afterTasks": ["a"], "message": "m"}])
    )
    run.complete("a")
    run.send(AbortRequested())
    assert run.state.status is MissionStatus.CANCELLED and run.state.pause_reason is None


def test_abort_of_a_finished_run_is_ignored() -> None:
    run = Run(mission({"id": "t1"}))
    run.complete("t1")
    assert_ignored(run, AbortRequested())


def test_deadline_stops_the_run_as_failed_with_deadline_exceeded() -> None:
    run = Run(mission({"id": "t1"}, {"id": "t2", "dependsOn": ["t1"]}, deadline="2026-04-01T13:00:00Z"))
    run.claim("t1")
    decision = run.send(DeadlineReached(), after=3600)
    assert of(decision, CancelTask) == [CancelTask("t1", 1, "deadline_exceeded")]
    assert run.statuses() == {"t1": "cancelled", "t2": "cancelled"}
    assert run.state.status is MissionStatus.FAILED and run.state.failure_reason == "deadline_exceeded"
    assert published(decision, "mission:status")[0] == {
        "missionId": "msn_1",
        "runId": "run_1",
        "status": "failed",
        "reason": "deadline_exceeded",
    }
    assert published(decision, "mission:done")[0]["reason"] == "deadline_exceeded"


# ---------------------------------------------------------------------------------------- end


def test_run_completes_when_every_task_completed() -> None:
    run = Run(mission({"id": "t1"}, {"id": "t2", "dependsOn": ["t1"]}, deadline="2026-04-02T00:00:00Z"))
    run.complete("t1")
    decision = run.complete("t2")
    assert run.state.status is MissionStatus.COMPLETED and run.state.finished_at == T0
    kinds = [e.type for e in decision.effects if isinstance(e, PublishEvent)]
    assert kinds[-2:] == ["mission:status", "mission:done"]
    assert published(decision, "mission:done")[0] == {
        "missionId": "msn_1",
        "runId": "run_1",
        "status": "completed",
        "reason": None,
        "summary": {"completed": 2, "failed": 0, "skipped": 0, "cancelled": 0},
    }
    assert decision.effects[-1] == CancelTimer("deadline", "run")


def test_run_fails_with_task_failed_when_a_task_failed() -> None:
    run = Run(mission({"id": "t1", "maxRetries": 0}))
    decision = run.fail("t1")
    assert run.state.status is MissionStatus.FAILED and run.state.failure_reason == "task_failed"
    assert published(decision, "mission:status")[0]["reason"] == "task_failed"


# -------------------------------------------------------------------- adding and changing tasks


def test_task_added_to_an_active_run_without_dependencies_starts_at_once() -> None:
    run = Run(mission({"id": "t1"}))
    decision = run.send(TaskAdded(task_spec(id="t9")))
    assert started(decision) == [StartTask("t9", 1, "dev", "scripted/dev")]
    assert run.state.spec.tasks[-1].id == "t9"


def test_task_added_with_dependencies_waits_for_them_then_starts() -> None:
    run = Run(mission({"id": "t1"}))
    run.send(TaskAdded(task_spec(id="t9", dependsOn=["t1"])))
    assert run.task("t9").status is P
    decision = run.complete("t1")
    assert started(decision) == [StartTask("t9", 1, "dev", "scripted/dev")]


def test_task_added_after_its_dependency_failed_is_skipped() -> None:
    run = Run(mission({"id": "t1", "maxRetries": 0}, {"id": "t2"}))
    run.fail("t1")
    run.send(TaskAdded(task_spec(id="t9", dependsOn=["t1"])))
    assert run.task("t9").status is TaskStatus.SKIPPED


def test_task_added_to_a_paused_run_waits_for_the_resume() -> None:
    run = Run(mission({"id": "a"}, {"id": "b"}, checkpoints=[{"afterTasks": ["a"], "message": "m"}]))
    run.complete("a")
    decision = run.send(TaskAdded(task_spec(id="t9")))
    assert started(decision) == [] and run.task("t9").status is P


def test_adding_a_task_twice_or_with_an_unknown_dependency_is_ignored() -> None:
    run = Run(mission({"id": "t1"}))
    run.send(TaskAdded(task_spec(id="t9")))
    assert_ignored(run, TaskAdded(task_spec(id="t9")))
    assert_ignored(run, TaskAdded(task_spec(id="t10", dependsOn=["nope"])))


def test_update_of_a_task_that_never_started_applies() -> None:
    run = Run(mission({"id": "t1"}, {"id": "t2", "dependsOn": ["t1"]}))
    decision = run.send(TaskUpdated(task_spec(id="t2", title="Renamed", assignTo="ops")))
    assert started(decision) == [StartTask("t2", 1, "ops", "scripted/ops")]
    assert run.task("t2").title == "Renamed"
    assert run.state.task_by_title("Renamed").task_id == "t2"


def test_update_of_a_started_task_is_ignored() -> None:
    run = Run(mission({"id": "t1"}))
    assert_ignored(run, TaskUpdated(task_spec(id="t1", priority=3)))


def test_removing_the_last_pending_task_lets_the_run_complete() -> None:
    run = Run(mission({"id": "t1"}, {"id": "t2", "dependsOn": ["t1"]}, {"id": "t3", "dependsOn": ["t1"]}))
    run.send(TaskRemoved("t3"))
    assert "t3" not in run.state.tasks and [t.id for t in run.state.spec.tasks] == ["t1", "t2"]
    run.complete("t1")
    run.complete("t2")
    assert run.state.status is MissionStatus.COMPLETED


def test_removing_a_started_task_or_one_others_depend_on_is_ignored() -> None:
    run = Run(mission({"id": "t1"}, {"id": "t2", "dependsOn": ["t1"]}, {"id": "t3"}))
    assert_ignored(run, TaskRemoved("t1"))
    run.send(TaskAdded(task_spec(id="t4", dependsOn=["t2"])))
    assert_ignored(run, TaskRemoved("t2"))


# ------------------------------------------------------------------------- late and duplicates


@pytest.mark.parametrize(
    "event",
    [
        TaskClaimed("ghost", 1, "w"),
        TaskFinished("ghost", 1, "x"),
        TaskFailed("ghost", 1, "x"),
        WorkerLost("ghost", 1),
        RetryDue("ghost", 1),
        TaskUpdated(task_spec(id="ghost")),
        TaskRemoved("ghost"),
    ],
)
def test_events_about_unknown_tasks_are_ignored(event: Event) -> None:
    assert_ignored(Run(mission({"id": "t1"})), event)


def test_events_of_a_previous_attempt_are_ignored() -> None:
    run = Run(mission({"id": "t1"}))
    run.fail("t1")
    for event in (
        TaskClaimed("t1", 1, "w"),
        TaskFinished("t1", 1, "x"),
        TaskFailed("t1", 1, "x"),
        TaskTimedOut("t1", 1),
        WorkerLost("t1", 1),
    ):
        assert_ignored(run, event)


def test_events_after_the_run_ended_are_ignored() -> None:
    run = Run(mission({"id": "t1"}))
    run.complete("t1")
    for event in (
        DeadlineReached(),
        ResumeRequested(True),
        TaskAdded(task_spec(id="t2")),
        TaskFinished("t1", 1, "again"),
    ):
        assert_ignored(run, event)


# ---------------------------------------------------------------------------- serialisation


def test_run_state_survives_a_json_round_trip() -> None:
    run = Run(
        mission(
            {"id": "a", "expectations": JUDGED, "retryPolicy": {"backoff": 5}},
            {"id": "b", "dependsOn": ["a"], "timeout": 9},
            qualityGates=[{"afterTasks": ["a"], "blocksTasks": ["b"], "minScore": 4}],
            deadline="2026-04-02T00:00:00Z",
        )
    )
    run.finish("a")
    run.score("a", 2.0, "weak")
    document = json.loads(json.dumps(run.state.to_json()))
    assert RunState.from_json(document) == run.state
    assert document["tasks"][0]["retryAt"] == "2026-04-01T12:00:05Z"


def test_a_restored_state_keeps_deciding_like_the_original() -> None:
    run = Run(mission({"id": "t1"}, {"id": "t2", "dependsOn": ["t1"]}))
    run.claim("t1")
    restored = RunState.from_json(json.loads(json.dumps(run.state.to_json())))
    event = TaskFinished("t1", 1, "x")
    assert decide(restored, event, T0) == decide(run.state, event, T0)


# ------------------------------------------------------------------------------ performance


def _layered() -> MissionSpec:
    # 40 layers of 50 tasks; each task depends on two tasks of the layer before.
    tasks: list[dict[str, Any]] = []
    for layer in range(40):
        for i in range(50):
            deps = [f"t{layer - 1}_{i}", f"t{layer - 1}_{(i + 1) % 50}"] if layer else []
            tasks.append({"id": f"t{layer}_{i}", "dependsOn": deps, "priority": i % 3})
    return mission(*tasks, maxConcurrency=100)


def _throttled_fan_in() -> MissionSpec:
    tasks: list[dict[str, Any]] = [{"id": f"t{i}", "priority": i % 5} for i in range(1999)]
    tasks.append({"id": "sink", "dependsOn": [f"t{i}" for i in range(1999)]})
    return mission(*tasks, maxConcurrency=10)


def _chain() -> MissionSpec:
    return mission({"id": "t0"}, *({"id": f"t{i}", "dependsOn": [f"t{i - 1}"]} for i in range(1, 2000)))


@pytest.mark.parametrize("shape", [_layered, _throttled_fan_in, _chain], ids=["layered", "throttled-fan-in", "chain"])
def test_a_two_thousand_task_mission_costs_little_per_decision(shape: Any) -> None:
    run = Run(shape())
    queue = [s.task_id for s in started(run.last)]
    steps = 0
    began = time.perf_counter()
    while queue:
        task_id = queue.pop()
        run.send(TaskClaimed(task_id, 1, "w"))
        queue.extend(s.task_id for s in started(run.send(TaskFinished(task_id, 1, "ok"))))
        steps += 2
    elapsed = time.perf_counter() - began
    assert run.state.status is MissionStatus.COMPLETED and steps == 4000
    # About 0.05 ms per decision here; a scan of every task per decision would be 1 ms and more.
    assert elapsed / steps < 0.002, f"{elapsed / steps * 1000:.2f} ms per decision"


# ---------------------------------------------------------------- operator commands on one task


def branches() -> MissionSpec:
    return mission(
        {"id": "a", "maxRetries": 0},
        {"id": "a2", "dependsOn": ["a"]},
        {"id": "b"},
        {"id": "b2", "dependsOn": ["b"]},
    )


def test_cancelling_a_running_task_stops_its_attempt_and_skips_its_dependents_while_the_sibling_branch_goes_on() -> (
    None
):
    run = Run(
        mission(
            {"id": "a", "timeout": 60}, {"id": "a2", "dependsOn": ["a"]}, {"id": "b"}, {"id": "b2", "dependsOn": ["b"]}
        )
    )
    run.claim("a")
    decision = run.send(TaskCancelRequested("a"))
    assert of(decision, CancelTask) == [CancelTask("a", 1, "cancelled")]
    assert of(decision, CancelTimer) == [CancelTimer("timeout", "a:1")]
    assert run.task("a").status is TaskStatus.CANCELLED and run.task("a").error == CANCELLED_BY_OPERATOR
    assert run.task("a2").status is TaskStatus.SKIPPED
    assert run.state.status is MissionStatus.ACTIVE
    run.complete("b")
    decision = run.complete("b2")
    assert run.state.status is MissionStatus.FAILED and run.state.failure_reason == "task_cancelled"
    assert published(decision, "mission:done")[0]["summary"]["cancelled"] == 1


def test_cancelling_a_pending_retry_disarms_its_backoff_timer() -> None:
    run = Run(mission({"id": "a", "maxRetries": 1, "retryPolicy": {"backoff": 30}}, {"id": "b"}))
    run.fail("a")
    decision = run.send(TaskCancelRequested("a"))
    assert of(decision, CancelTimer) == [CancelTimer("retry", "a:2")]
    assert of(decision, CancelTask) == []


def test_cancelling_a_task_being_assessed_stops_its_judge() -> None:
    run = Run(mission({"id": "a", "expectations": JUDGED}, {"id": "b"}))
    run.finish("a")
    decision = run.send(TaskCancelRequested("a"))
    assert of(decision, CancelTask) == [CancelTask("a", 1, "cancelled")]
    assert_ignored(run, AssessmentScored("a", 1, 5.0))  # the verdict comes too late


def test_cancelling_the_task_awaiting_approval_lifts_the_pause() -> None:
    run = Run(mission({"id": "deploy", "sideEffects": True}, {"id": "notify", "dependsOn": ["deploy"]}, {"id": "x"}))
    run.claim("deploy")
    run.send(WorkerLost("deploy", 1))
    assert run.state.status is MissionStatus.PAUSED
    decision = run.send(TaskCancelRequested("deploy"))
    assert run.task("notify").status is TaskStatus.SKIPPED
    assert [d["status"] for d in published(decision, "mission:status")] == ["active"]
    run.complete("x")
    assert run.state.status is MissionStatus.FAILED


def test_cancelling_a_finished_or_unknown_task_is_ignored_with_a_reason() -> None:
    run = Run(branches())
    run.complete("b")
    assert_ignored(run, TaskCancelRequested("b"))
    assert "already completed" in (run.last.ignored or "")
    assert_ignored(run, TaskCancelRequested("ghost"))


def test_retrying_a_failed_task_gives_it_a_fresh_budget_and_unskips_its_dependents() -> None:
    run = Run(branches())
    run.fail("a")
    assert run.statuses()["a2"] == "skipped"
    decision = run.send(TaskRetryRequested("a"))
    assert started(decision) == [StartTask("a", 2, "dev", "scripted/dev")]
    assert run.task("a").failed_attempts == 0 and run.task("a2").status is P
    assert "Attempt 1 failed: boom" in run.task("a").feedback  # what went wrong still reaches the prompt
    run.complete("a")
    run.complete("a2")
    run.complete("b")
    run.complete("b2")
    assert run.state.status is MissionStatus.COMPLETED


def test_retrying_a_skipped_task_reruns_the_failed_task_it_was_skipped_because_of() -> None:
    run = Run(
        mission(
            {"id": "a", "maxRetries": 0},
            {"id": "a2", "dependsOn": ["a"]},
            {"id": "a3", "dependsOn": ["a2"]},
            {"id": "b"},
        )
    )
    run.fail("a")
    decision = run.send(TaskRetryRequested("a3"))
    assert started(decision) == [StartTask("a", 2, "dev", "scripted/dev")]
    assert run.statuses() == {"a": "queued", "a2": "pending", "a3": "pending", "b": "queued"}


def test_retrying_a_cancelled_task_runs_it_again() -> None:
    run = Run(branches())
    run.claim("a")
    run.send(TaskCancelRequested("a"))
    decision = run.send(TaskRetryRequested("a"))
    assert started(decision) == [StartTask("a", 2, "dev", "scripted/dev")]


def test_retrying_a_task_that_did_not_fail_is_ignored_with_a_reason() -> None:
    run = Run(branches())
    assert_ignored(run, TaskRetryRequested("b"))
    assert "only a failed, cancelled or skipped task can be retried" in (run.last.ignored or "")
    run.complete("b")
    assert_ignored(run, TaskRetryRequested("b"))


def test_retrying_a_failed_after_task_of_a_blocked_gate_judges_the_gate_again() -> None:
    run = Run(gated(min_score=None, require_all=True, maxRetries=0))
    run.complete("a", 5.0)
    run.finish("b")
    run.score("b", 1.0)
    assert run.state.status is MissionStatus.FAILED and run.state.gates[0] == "blocked"
    run.send(TaskRetryRequested("b"))
    assert run.state.gates[0] == "pending" and run.state.status is MissionStatus.ACTIVE
    decision = run.complete("b", 4.0)
    assert run.state.gates[0] == "passed"
    assert started(decision) == [StartTask("c", 1, "dev", "scripted/dev")]


# -------------------------------------------------------------------- continuing a failed run


def failed_run() -> Run:
    run = Run(branches())
    run.fail("a")
    run.complete("b")
    run.complete("b2")
    assert run.state.status is MissionStatus.FAILED
    return run


def test_resume_with_retry_failed_continues_a_run_that_failed_because_a_task_failed() -> None:
    run = failed_run()
    before_b = run.task("b")
    decision = run.send(ResumeRequested(retry_failed=True))
    assert run.state.status is MissionStatus.ACTIVE and run.state.failure_reason is None
    assert run.state.finished_at is None
    assert published(decision, "mission:status")[0]["status"] == "active"
    assert started(decision) == [StartTask("a", 2, "dev", "scripted/dev")]  # b and b2 are not paid again
    assert run.task("b") == before_b
    run.complete("a")
    decision = run.complete("a2")
    assert run.state.status is MissionStatus.COMPLETED
    assert published(decision, "mission:done")[0]["summary"]["completed"] == 4


def test_continuing_a_failed_run_arms_its_deadline_again() -> None:
    run = Run(mission({"id": "a", "maxRetries": 0}, deadlineAfter=600))
    run.fail("a")
    assert of(run.last, CancelTimer) == [CancelTimer("deadline", "run")]
    decision = run.send(ResumeRequested(retry_failed=True), after=60)
    assert of(decision, ScheduleTimer) == [ScheduleTimer("deadline", "run", T0 + timedelta(seconds=600))]


def test_a_failed_run_past_its_deadline_is_not_continued() -> None:
    run = Run(mission({"id": "a", "maxRetries": 0}, deadlineAfter=600))
    run.fail("a")
    assert_ignored(run, ResumeRequested(retry_failed=True), after=601)
    assert "deadline" in (run.last.ignored or "")


def test_a_failed_run_is_continued_only_with_retry_failed() -> None:
    run = failed_run()
    assert_ignored(run, ResumeRequested(retry_failed=False))
    assert "retryFailed" in (run.last.ignored or "")


@pytest.mark.parametrize("stop", [AbortRequested(), DeadlineReached()], ids=["aborted", "deadline"])
def test_an_aborted_or_deadline_stopped_run_is_not_continued(stop: Event) -> None:
    run = Run(mission({"id": "a"}, deadlineAfter=600))
    run.send(stop)
    assert_ignored(run, ResumeRequested(retry_failed=True))
    assert_ignored(run, TaskRetryRequested("a"))


def test_a_run_with_only_cancelled_tasks_is_continued_by_retrying_the_task_not_by_resume() -> None:
    run = Run(branches())
    run.claim("a")
    run.send(TaskCancelRequested("a"))
    run.complete("b")
    run.complete("b2")
    assert run.state.failure_reason == "task_cancelled"
    assert_ignored(run, ResumeRequested(retry_failed=True))
    decision = run.send(TaskRetryRequested("a"))
    assert run.state.status is MissionStatus.ACTIVE
    assert started(decision) == [StartTask("a", 2, "dev", "scripted/dev")]


def test_retrying_one_task_of_a_failed_run_continues_it_with_only_that_task() -> None:
    run = Run(mission({"id": "a", "maxRetries": 0}, {"id": "b", "maxRetries": 0}, {"id": "c"}))
    run.fail("a")
    run.fail("b")
    run.complete("c")
    decision = run.send(TaskRetryRequested("b"))
    assert started(decision) == [StartTask("b", 2, "dev", "scripted/dev")]
    run.complete("b")
    assert run.state.status is MissionStatus.FAILED and run.task("a").status is TaskStatus.FAILED


# -------------------------------------------------------------- reviews at checkpoints and approvals


def reviewed() -> MissionSpec:
    return mission(
        {"id": "draft"},
        {"id": "facts"},
        {"id": "publish", "dependsOn": ["draft", "facts"]},
        checkpoints=[
            {"name": "edit", "afterTasks": ["draft", "facts"], "blocksTasks": ["publish"], "message": "Edit?"}
        ],
    )


def at_checkpoint() -> Run:
    run = Run(reviewed())
    run.complete("draft")
    run.complete("facts")
    assert run.state.status is MissionStatus.PAUSED and run.state.checkpoints[0] == "waiting"
    return run


def review(decision: str, feedback: str | None = None, *redo: str) -> ReviewSubmitted:
    return ReviewSubmitted(ReviewDecision(decision), feedback, redo, "key_1", "ana")


def test_approving_a_checkpoint_goes_on_and_is_recorded_and_streamed() -> None:
    run = at_checkpoint()
    decision = run.send(review("approve"), after=5)
    assert run.state.status is MissionStatus.ACTIVE and run.state.checkpoints[0] == "approved"
    assert started(decision) == [StartTask("publish", 1, "dev", "scripted/dev")]
    (recorded,) = run.state.reviews
    assert (recorded.decision, recorded.reviewer_id, recorded.reviewer_name) == ("approve", "key_1", "ana")
    assert recorded.at == T0 + timedelta(seconds=5) and recorded.checkpoints == ('"edit"',)
    assert published(decision, "review:decided") == [{"missionId": "msn_1", "runId": "run_1", **recorded.to_json()}]


def test_requesting_changes_reruns_the_named_after_task_with_the_feedback_and_reaches_the_checkpoint_again() -> None:
    run = at_checkpoint()
    decision = run.send(review("request_changes", "cite your sources", "draft"))
    assert started(decision) == [StartTask("draft", 2, "dev", "scripted/dev")]
    assert run.state.checkpoints[0] == "pending" and run.state.status is MissionStatus.ACTIVE
    assert run.task("draft").review == ("The reviewer ana asked for changes: cite your sources",)
    assert run.task("facts").attempt == 1  # not named: kept
    assert run.state.reviews[0].redo == ("draft",)
    decision = run.complete("draft")
    assert run.state.status is MissionStatus.PAUSED and run.state.checkpoints[0] == "waiting"
    assert len(published(decision, "checkpoint:waiting")) == 1
    run.send(review("approve"))
    run.complete("publish")
    assert run.state.status is MissionStatus.COMPLETED and len(run.state.reviews) == 2


def test_requesting_changes_without_naming_tasks_redoes_every_after_task_of_the_checkpoint() -> None:
    run = at_checkpoint()
    decision = run.send(review("request_changes", "shorter"))
    assert sorted(s.task_id for s in started(decision)) == ["draft", "facts"]


def test_requesting_changes_needs_feedback_and_may_only_redo_an_after_task_of_a_waiting_checkpoint() -> None:
    run = at_checkpoint()
    assert_ignored(run, review("request_changes", "  "))
    assert "needs feedback" in (run.last.ignored or "")
    assert_ignored(run, review("request_changes", "x", "publish"))
    assert "not an afterTask of a waiting checkpoint" in (run.last.ignored or "")


def test_rejecting_at_a_checkpoint_fails_the_mission_with_reason_rejected_and_the_feedback_recorded() -> None:
    run = at_checkpoint()
    decision = run.send(review("reject", "wrong audience"))
    assert run.state.status is MissionStatus.FAILED and run.state.failure_reason == "rejected"
    assert run.task("publish").status is TaskStatus.CANCELLED
    assert run.state.reviews[0].feedback == "wrong audience"
    assert published(decision, "mission:done")[0]["reason"] == "rejected"
    assert_ignored(run, ResumeRequested(retry_failed=True))  # a rejected run is not continued


def test_a_review_while_nothing_waits_for_a_person_is_ignored() -> None:
    run = Run(reviewed())
    assert_ignored(run, review("approve"))
    gated_run = Run(gated(min_score=4.0))
    gated_run.complete("a", 3.0)
    gated_run.complete("b", 3.0)
    assert_ignored(gated_run, review("approve"))
    assert "quality gate" in (gated_run.last.ignored or "")


def approval_run(**fields: Any) -> Run:
    run = Run(mission({"id": "deploy", "sideEffects": True}, {"id": "notify", "dependsOn": ["deploy"]}, **fields))
    run.claim("deploy")
    run.send(WorkerLost("deploy", 1))
    assert run.task("deploy").status is TaskStatus.AWAITING_APPROVAL
    return run


def test_approving_a_side_effect_approval_runs_the_task_again() -> None:
    run = approval_run()
    decision = run.send(review("approve"))
    assert started(decision) == [StartTask("deploy", 2, "dev", "scripted/dev")]
    assert run.state.reviews[0].tasks == ("deploy",)


def test_requesting_changes_at_an_approval_reruns_the_task_with_the_feedback() -> None:
    run = approval_run()
    run.send(review("request_changes", "deploy to the canary first"))
    assert run.task("deploy").status is Q
    assert run.task("deploy").review == ("The reviewer ana asked for changes: deploy to the canary first",)


# ----------------------------------------------------------------------------- timeouts for people


def test_a_checkpoint_with_a_timeout_arms_its_timer_when_reached_and_a_decision_disarms_it() -> None:
    spec = mission(
        {"id": "a"},
        {"id": "b", "dependsOn": ["a"]},
        checkpoints=[{"afterTasks": ["a"], "blocksTasks": ["b"], "timeout": 60, "onTimeout": "approve"}],
    )
    run = Run(spec)
    decision = run.complete("a")
    assert of(decision, ScheduleTimer) == [ScheduleTimer("checkpoint", "0", T0 + timedelta(seconds=60))]
    waiting = published(decision, "checkpoint:waiting")[0]
    assert waiting["timeoutAt"] == "2026-04-01T12:01:00Z" and waiting["onTimeout"] == "approve"
    decision = run.send(ResumeRequested(retry_failed=False))
    assert of(decision, CancelTimer) == [CancelTimer("checkpoint", "0")]


@pytest.mark.parametrize("on_timeout", ["approve", "reject", "fail"])
def test_a_checkpoint_nobody_decides_in_time_does_what_its_on_timeout_says(on_timeout: str) -> None:
    spec = mission(
        {"id": "a"},
        {"id": "b", "dependsOn": ["a"]},
        {"id": "c"},
        checkpoints=[{"afterTasks": ["a"], "blocksTasks": ["b"], "timeout": 60, "onTimeout": on_timeout}],
    )
    run = Run(spec)
    run.complete("c")
    run.complete("a")
    decision = run.send(timer_event("checkpoint", "0") or DeadlineReached(), after=60)
    (recorded,) = run.state.reviews
    assert recorded.decision == on_timeout and recorded.timed_out and recorded.reviewer_id is None
    assert published(decision, "review:decided")[0]["timedOut"] is True
    if on_timeout == "approve":
        assert started(decision) == [StartTask("b", 1, "dev", "scripted/dev")]
        run.complete("b")
        assert run.state.status is MissionStatus.COMPLETED
    elif on_timeout == "reject":
        assert run.state.status is MissionStatus.FAILED and run.state.failure_reason == "rejected"
    else:
        assert run.state.checkpoints[0] == "failed"
        assert run.task("b").status is TaskStatus.SKIPPED and run.task("b").error == "checkpoint #1 timed out"
        assert run.state.status is MissionStatus.FAILED and run.state.failure_reason == "task_failed"


def test_a_checkpoint_timeout_that_fires_after_a_decision_is_ignored() -> None:
    spec = mission({"id": "a"}, {"id": "b", "dependsOn": ["a"]}, checkpoints=[{"afterTasks": ["a"], "timeout": 60}])
    run = Run(spec)
    run.complete("a")
    run.send(review("approve"))
    assert_ignored(run, CheckpointTimedOut(0), after=60)


@pytest.mark.parametrize(
    ("fields", "on_timeout"),
    [
        ({"approvalTimeout": 600, "onApprovalTimeout": "approve"}, "approve"),
        ({"approvalTimeout": 600}, "fail"),
        ({"approvalTimeout": 600, "onApprovalTimeout": "reject"}, "reject"),
    ],
)
def test_a_side_effect_approval_nobody_decides_in_time_does_what_its_on_approval_timeout_says(
    fields: dict[str, Any], on_timeout: str
) -> None:
    run = Run(mission({"id": "deploy", "sideEffects": True}, {"id": "notify", "dependsOn": ["deploy"]}, **fields))
    run.claim("deploy")
    decision = run.send(WorkerLost("deploy", 1))
    assert of(decision, ScheduleTimer) == [ScheduleTimer("approval", "deploy:1", T0 + timedelta(seconds=600))]
    decision = run.send(ApprovalTimedOut("deploy", 1), after=600)
    assert run.state.reviews[0].decision == on_timeout
    if on_timeout == "approve":
        assert started(decision) == [StartTask("deploy", 2, "dev", "scripted/dev")]
    elif on_timeout == "fail":
        assert run.task("deploy").status is TaskStatus.FAILED and "approval timed out" in (
            run.task("deploy").error or ""
        )
        assert run.task("notify").status is TaskStatus.SKIPPED and run.state.status is MissionStatus.FAILED
    else:
        assert run.state.failure_reason == "rejected"


def test_a_tasks_retry_policy_approval_timeout_wins_over_the_missions() -> None:
    policy = {"approvalTimeout": 30, "onApprovalTimeout": "approve"}
    run = Run(
        mission(
            {"id": "deploy", "sideEffects": True, "retryPolicy": policy},
            approvalTimeout=600,
            onApprovalTimeout="reject",
        )
    )
    run.claim("deploy")
    decision = run.send(WorkerLost("deploy", 1))
    assert of(decision, ScheduleTimer) == [ScheduleTimer("approval", "deploy:1", T0 + timedelta(seconds=30))]
    decision = run.send(ResumeRequested(retry_failed=True))
    assert of(decision, CancelTimer) == [CancelTimer("approval", "deploy:1")]


# ------------------------------------------------------------------------------------------ delays


def delayed(duration: Any = "PT10M") -> MissionSpec:
    return mission(
        {"id": "build"},
        {"id": "deploy", "dependsOn": ["build"]},
        {"id": "other"},
        delays=[{"name": "cool-off", "afterTasks": ["build"], "blocksTasks": ["deploy"], "duration": duration}],
    )


def test_a_delay_holds_its_blocked_task_for_its_duration_once_its_after_tasks_completed() -> None:
    run = Run(delayed())
    assert run.state.delays[0].status == "pending"
    run.now += timedelta(seconds=1)
    decision = run.complete("build")
    until = T0 + timedelta(seconds=601)
    assert of(decision, ScheduleTimer) == [ScheduleTimer("delay", "0", until)]
    assert started(decision) == []
    assert published(decision, "delay:started") == [
        {
            "missionId": "msn_1",
            "runId": "run_1",
            "delay": 0,
            "name": "cool-off",
            "afterTasks": ["build"],
            "blocksTasks": ["deploy"],
            "seconds": 600.0,
            "until": "2026-04-01T12:10:01Z",
        }
    ]
    assert run.state.delays[0].status == "waiting" and run.state.delays[0].until == until
    run.complete("other")
    assert run.state.status is MissionStatus.ACTIVE  # waiting for the delay, nothing in flight
    decision = run.send(timer_event("delay", "0") or DeadlineReached(), after=600)
    assert published(decision, "delay:ended")[0]["blocksTasks"] == ["deploy"]
    assert started(decision) == [StartTask("deploy", 1, "dev", "scripted/dev")]
    assert run.state.delays[0].status == "elapsed"


def test_a_delay_of_seconds_is_the_same_as_its_iso_duration() -> None:
    run = Run(delayed(90))
    decision = run.complete("build")
    assert of(decision, ScheduleTimer) == [ScheduleTimer("delay", "0", T0 + timedelta(seconds=90))]


def test_a_delay_that_can_no_longer_start_skips_its_blocked_tasks() -> None:
    run = Run(
        mission(
            {"id": "a", "maxRetries": 0},
            {"id": "b"},
            {"id": "c", "dependsOn": ["a", "b"]},
            delays=[{"afterTasks": ["b"], "blocksTasks": ["c"], "duration": 60}],
        )
    )
    run.fail("a")
    assert run.task("c").status is TaskStatus.SKIPPED


def test_an_abort_cancels_a_waiting_delay_timer() -> None:
    run = Run(delayed())
    run.complete("build")
    decision = run.send(AbortRequested())
    assert CancelTimer("delay", "0") in of(decision, CancelTimer)


def test_delays_and_reviews_round_trip_through_the_run_state_json() -> None:
    run = at_checkpoint()
    run.send(review("request_changes", "again", "draft"))
    delayed_run = Run(delayed())
    delayed_run.complete("build")
    for state in (run.state, delayed_run.state):
        assert RunState.from_json(json.loads(json.dumps(state.to_json()))) == state


# ---------------------------------------------------------------------------------------- reassess


def judged_failure() -> Run:
    run = Run(
        mission({"id": "a", "expectations": JUDGED, "maxRetries": 0}, {"id": "b", "dependsOn": ["a"]}, {"id": "c"})
    )
    run.finish("a", "the output")
    run.score("a", None, error="judge unreachable")
    assert run.task("a").status is TaskStatus.FAILED and run.task("b").status is TaskStatus.SKIPPED
    return run


def test_reassessing_scores_the_last_output_again_and_a_pass_unskips_its_dependents() -> None:
    run = judged_failure()
    decision = run.send(ReassessRequested("a"))
    assert of(decision, AssessTask) == [AssessTask("a", 1, "the output")]
    assert started(decision) == []  # the agent does not run again
    assert run.task("a").status is TaskStatus.ASSESSING and run.task("a").failed_attempts == 0
    assert run.task("b").status is P
    decision = run.score("a", 4.0)
    assert run.task("a").status is TaskStatus.COMPLETED
    assert started(decision) == [StartTask("b", 1, "dev", "scripted/dev")]


def test_a_reassessment_that_fails_again_fails_the_task_again_within_its_budget() -> None:
    run = judged_failure()
    run.send(ReassessRequested("a"))
    run.score("a", 1.0)
    assert run.task("a").status is TaskStatus.FAILED and run.task("a").failed_attempts == 1
    assert run.task("b").status is TaskStatus.SKIPPED


def test_reassessing_continues_a_run_that_failed_on_that_assessment() -> None:
    run = judged_failure()
    run.complete("c")
    assert run.state.status is MissionStatus.FAILED
    run.send(ReassessRequested("a"))
    assert run.state.status is MissionStatus.ACTIVE
    run.score("a", 5.0)
    run.complete("b")
    assert run.state.status is MissionStatus.COMPLETED


def test_only_a_task_that_failed_its_assessment_can_be_reassessed() -> None:
    run = Run(mission({"id": "a", "maxRetries": 0}, {"id": "c", "expectations": JUDGED}))
    run.fail("a")
    assert_ignored(run, ReassessRequested("a"))  # its agent failed: nothing was assessed
    assert "only a failed task whose last attempt failed its assessment" in (run.last.ignored or "")
    run.complete("c", 4.0)
    assert_ignored(run, ReassessRequested("c"))


def test_a_run_that_ends_while_a_delay_waits_disarms_the_delay() -> None:
    run = Run(
        mission(
            {"id": "a"},
            {"id": "x", "maxRetries": 0},
            {"id": "b", "dependsOn": ["a", "x"]},
            delays=[{"afterTasks": ["a"], "blocksTasks": ["b"], "duration": 60}],
        )
    )
    run.complete("a")
    decision = run.fail("x")  # "b" is skipped: nothing waits for the delay any more
    assert run.state.status is MissionStatus.FAILED
    assert CancelTimer("delay", "0") in of(decision, CancelTimer)


def test_continuing_a_run_that_ended_while_a_delay_waited_arms_the_delay_again() -> None:
    run = Run(
        mission(
            {"id": "a"},
            {"id": "x", "maxRetries": 0},
            {"id": "b", "dependsOn": ["a", "x"]},
            delays=[{"afterTasks": ["a"], "blocksTasks": ["b"], "duration": 60}],
        )
    )
    run.complete("a")
    run.fail("x")
    decision = run.send(TaskRetryRequested("x"))
    assert ScheduleTimer("delay", "0", T0 + timedelta(seconds=60)) in of(decision, ScheduleTimer)
    run.complete("x")
    decision = run.send(DelayElapsed(0), after=60)
    assert started(decision) == [StartTask("b", 1, "dev", "scripted/dev")]


def test_reassessing_a_failed_after_task_of_a_blocked_gate_judges_the_gate_again() -> None:
    run = Run(gated(min_score=None, require_all=True, maxRetries=0))
    run.complete("a", 5.0)
    run.finish("b")
    run.score("b", 1.0)
    assert run.state.gates[0] == "blocked" and run.state.status is MissionStatus.FAILED
    run.send(ReassessRequested("b"))
    assert run.state.gates[0] == "pending"
    decision = run.score("b", 4.0)
    assert run.state.gates[0] == "passed"
    assert started(decision) == [StartTask("c", 1, "dev", "scripted/dev")]
