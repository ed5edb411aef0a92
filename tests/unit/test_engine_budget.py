"""A run over its mission's budget stops like an abort and fails with ``budget_exceeded``."""

from __future__ import annotations

import json

from orchestrator.engine import (
    FAILURE_BUDGET,
    AbortRequested,
    AssessTask,
    BudgetExceeded,
    CancelTask,
    CancelTimer,
    MissionStatus,
    PublishEvent,
    RunState,
    StartTask,
    decide,
)
from tests.unit.test_engine import JUDGED, Run, assert_ignored, mission, of, published


def test_budget_exceeded_cancels_running_and_waiting_tasks_and_fails_the_run() -> None:
    run = Run(mission({"id": "a"}, {"id": "b"}, {"id": "c", "dependsOn": ["a"]}, budget={"maxTokens": 100}))
    run.claim("a")
    decision = run.send(BudgetExceeded(), after=5)
    assert of(decision, CancelTask) == [CancelTask("a", 1, "budget_exceeded"), CancelTask("b", 1, "budget_exceeded")]
    assert run.statuses() == {"a": "cancelled", "b": "cancelled", "c": "cancelled"}
    assert run.state.status is MissionStatus.FAILED
    assert run.state.failure_reason == FAILURE_BUDGET == "budget_exceeded"
    assert of(decision, StartTask) == []


def test_budget_exceeded_announces_the_reason_in_mission_status_and_done() -> None:
    run = Run(mission({"id": "a"}, {"id": "b", "dependsOn": ["a"]}))
    run.complete("a")
    decision = run.send(BudgetExceeded())
    assert published(decision, "mission:status") == [
        {"missionId": "msn_1", "runId": "run_1", "status": "failed", "reason": "budget_exceeded"}
    ]
    done = published(decision, "mission:done")
    assert done == [
        {
            "missionId": "msn_1",
            "runId": "run_1",
            "status": "failed",
            "reason": "budget_exceeded",
            "summary": {"completed": 1, "failed": 0, "skipped": 0, "cancelled": 1},
        }
    ]
    kinds = [e.type for e in decision.effects if isinstance(e, PublishEvent)]
    assert kinds[-2:] == ["mission:status", "mission:done"]


def test_budget_exceeded_while_a_task_is_assessed_cancels_that_assessment() -> None:
    run = Run(mission({"id": "a", "expectations": JUDGED}))
    decision = run.finish("a")
    assert of(decision, AssessTask)
    decision = run.send(BudgetExceeded())
    assert of(decision, CancelTask) == [CancelTask("a", 1, "budget_exceeded")]
    assert run.statuses() == {"a": "cancelled"}


def test_budget_exceeded_disarms_the_deadline_and_a_waiting_retry() -> None:
    run = Run(mission({"id": "a", "retryPolicy": {"backoff": 30}}, deadline="2026-04-02T00:00:00Z"))
    run.fail("a")
    decision = run.send(BudgetExceeded())
    assert CancelTimer("retry", "a:2") in decision.effects
    assert CancelTimer("deadline", "run") in decision.effects


def test_budget_exceeded_stops_a_paused_run_too() -> None:
    run = Run(
        mission({"id": "a"}, {"id": "b", "dependsOn": ["a"]}, checkpoints=[{"afterTasks": ["a"], "message": "m"}])
    )
    run.complete("a")
    assert run.state.status is MissionStatus.PAUSED
    run.send(BudgetExceeded())
    assert run.state.status is MissionStatus.FAILED and run.state.pause_reason is None
    assert run.state.failure_reason == "budget_exceeded"


def test_budget_exceeded_after_the_run_ended_is_ignored() -> None:
    run = Run(mission({"id": "a"}))
    run.complete("a")
    assert_ignored(run, BudgetExceeded())
    aborted = Run(mission({"id": "a"}))
    aborted.send(AbortRequested())
    assert_ignored(aborted, BudgetExceeded())
    assert aborted.state.failure_reason == "aborted"


def test_budget_exceeded_twice_changes_nothing_the_second_time() -> None:
    run = Run(mission({"id": "a"}))
    run.send(BudgetExceeded())
    assert_ignored(run, BudgetExceeded())


def test_the_same_budget_event_gives_an_equal_decision() -> None:
    run = Run(mission({"id": "a"}, {"id": "b"}))
    run.claim("a")
    assert decide(run.state, BudgetExceeded(), run.now) == decide(run.state, BudgetExceeded(), run.now)


def test_a_run_stopped_by_its_budget_survives_a_json_round_trip_with_its_budget() -> None:
    run = Run(mission({"id": "a"}, budget={"maxCostUsd": 0.5, "maxTokens": 1000}))
    run.send(BudgetExceeded())
    document = json.loads(json.dumps(run.state.to_json()))
    assert RunState.from_json(document) == run.state
    assert document["failureReason"] == "budget_exceeded"
    assert document["spec"]["budget"] == {"maxCostUsd": 0.5, "maxTokens": 1000}
