"""End to end: real API, worker and beat processes, driven over HTTP and SSE."""

from __future__ import annotations

import time
from datetime import UTC

import pytest

from tests.e2e.scenarios import agent, code_review_pipeline, deploy_pipeline, mission
from tests.support.sse import read_events
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.e2e


def statuses_of(events: list, title: str) -> list[str]:
    return [e.data["status"] for e in events if e.event == "task:status" and e.data["title"] == title]


def test_deploy_pipeline_streams_its_whole_run_and_completes(stack: Stack) -> None:
    created = stack.create(deploy_pipeline())
    events = read_events(
        f"{stack.url}/v1/missions/{created['id']}/execute",
        {**stack.headers, "Accept": "text/event-stream"},
        method="POST",
        timeout=60,
    )
    kinds = [e.event for e in events]
    assert kinds[0] == "mission:status" and events[0].data["status"] == "active"
    assert kinds[-1] == "mission:done" and events[-1].data["status"] == "completed"
    assert statuses_of(events, "Run tests") == ["queued", "running", "assessing", "completed"]
    assert statuses_of(events, "Deploy to staging") == ["queued", "running", "completed"]
    outputs = [e.data["chunk"] for e in events if e.event == "task:output"]
    assert outputs == ["backend-dev ", "done", "deploy-agent ", "done"]
    assessment = next(e.data for e in events if e.event == "task:assessment")
    assert assessment["score"] == 4.5 and assessment["passed"] is True
    assert [c["criterion"] for c in assessment["criteria"]] == ["All tests pass", "Code coverage above 80%"]
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(e.data["missionId"] == created["id"] and e.data["runId"] for e in events)
    final = stack.mission(created["id"])
    assert final["status"] == "completed" and final["executionCount"] == 1
    assert {t["status"] for t in final["tasks"]} == {"completed"}


def test_code_review_pipeline_passes_upstream_output_downstream(stack: Stack) -> None:
    created = stack.create(code_review_pipeline())
    run = stack.execute(created["id"])
    assert run["status"] == "active" and run["id"].startswith("run_")
    final = stack.wait_status(created["id"], "completed", "failed")
    assert final["status"] == "completed"
    detail = stack.request("GET", f"/v1/missions/{created['id']}/runs/{run['id']}").json()
    assert {t["title"]: t["status"] for t in detail["tasks"]} == {
        "Analyze code changes": "completed",
        "Write review summary": "completed",
    }
    analyze = next(t for t in detail["tasks"] if t["title"] == "Analyze code changes")
    assert analyze["output"] == "code-reviewer done" and analyze["score"] == 4.5
    assert [c["reason"] for c in analyze["criteria"]] == ["meets the bar", "meets the bar"]
    assert detail["usage"]["attempts"] == 2 and set(detail["usage"]) == {"tokensIn", "tokensOut", "costUsd", "attempts"}


def test_a_failing_task_is_retried_with_feedback_and_then_succeeds(stack: Stack) -> None:
    doc = mission(
        "retry",
        [{"title": "Flaky", "assignTo": "a", "maxRetries": 2}],
        [agent("a", {"fail": "boom"}, {"output": "fine"})],
    )
    created = stack.create(doc)
    stack.execute(created["id"])
    final = stack.wait_status(created["id"], "completed", "failed")
    assert final["status"] == "completed"
    assert stack.tasks(final)["Flaky"]["attempt"] == 2


def test_fallback_agent_takes_over_when_retries_are_exhausted(stack: Stack) -> None:
    doc = mission(
        "fallback",
        [{"title": "Hard", "assignTo": "weak", "maxRetries": 1, "retryPolicy": {"fallbackAgent": "strong"}}],
        [agent("weak", {"fail": "cannot"}), agent("strong", {"output": "solved"})],
    )
    created = stack.create(doc)
    stack.execute(created["id"])
    final = stack.wait_status(created["id"], "completed", "failed")
    task = stack.tasks(final)["Hard"]
    assert final["status"] == "completed" and task["agent"] == "strong" and task["attempt"] == 3


def test_exhausted_task_skips_its_dependents_while_an_independent_branch_completes(stack: Stack) -> None:
    doc = mission(
        "branches",
        [
            {"title": "Broken", "assignTo": "bad", "maxRetries": 1},
            {"title": "After broken", "assignTo": "good", "dependsOn": ["Broken"]},
            {"title": "Independent", "assignTo": "good"},
        ],
        [agent("bad", {"fail": "always"}), agent("good", {"output": "ok"})],
    )
    created = stack.create(doc)
    stack.execute(created["id"])
    final = stack.wait_status(created["id"], "completed", "failed")
    tasks = stack.tasks(final)
    assert final["status"] == "failed"
    assert (tasks["Broken"]["status"], tasks["After broken"]["status"], tasks["Independent"]["status"]) == (
        "failed",
        "skipped",
        "completed",
    )


def test_gate_blocks_then_resume_with_retry_failed_passes(stack: Stack) -> None:
    doc = mission(
        "gated",
        [
            {"title": "Build", "assignTo": "dev", "expectations": [{"criterion": "Builds cleanly"}], "maxRetries": 0},
            {"title": "Ship", "assignTo": "dev", "dependsOn": ["Build"]},
        ],
        [agent("dev", {"output": "built"})],
        qualityThreshold=2.0,
        assessor={
            "model": "scripted/judge",
            "script": [{"score": 2.5, "reason": "sloppy"}, {"score": 4.8, "reason": "clean"}],
        },
        qualityGates=[{"afterTasks": ["Build"], "blocksTasks": ["Ship"], "minScore": 4.0}],
    )
    created = stack.create(doc)
    stack.execute(created["id"])
    paused = stack.wait_status(created["id"], "paused")
    assert paused["pauseReason"] == "quality_gate"
    assert stack.tasks(paused)["Ship"]["status"] == "pending"
    resumable = stack.request("GET", "/v1/missions/resumable").json()
    assert [m["id"] for m in resumable] == [created["id"]]
    response = stack.request("POST", f"/v1/missions/{created['id']}/resume", json={"retryFailed": True})
    assert response.status_code == 200, response.text
    final = stack.wait_status(created["id"], "completed", "failed", "paused")
    assert final["status"] == "completed"
    assert stack.tasks(final)["Build"]["score"] == 4.8


def test_checkpoint_pauses_until_resumed(stack: Stack) -> None:
    doc = mission(
        "checked",
        [
            {"title": "Stage", "assignTo": "ops"},
            {"title": "Prod", "assignTo": "ops", "dependsOn": ["Stage"]},
        ],
        [agent("ops", {"output": "ok"})],
        checkpoints=[
            {
                "afterTasks": ["Stage"],
                "blocksTasks": ["Prod"],
                "message": "Approve the staging deployment before proceeding to production.",
            }
        ],
    )
    created = stack.create(doc)
    stack.execute(created["id"])
    paused = stack.wait_status(created["id"], "paused")
    assert paused["pauseReason"] == "checkpoint"
    resumable = stack.request("GET", "/v1/missions/resumable").json()
    assert resumable == [
        {
            "id": created["id"],
            "name": "checked",
            "status": "paused",
            "pauseReason": "checkpoint",
            "pauseMessage": "Approve the staging deployment before proceeding to production.",
        }
    ]
    assert stack.request("POST", f"/v1/missions/{created['id']}/resume", json={"retryFailed": False}).ok
    final = stack.wait_status(created["id"], "completed", "failed")
    assert final["status"] == "completed"


def test_abort_stops_a_long_running_agent_within_two_seconds(stack: Stack) -> None:
    doc = mission("long", [{"title": "Sleep", "assignTo": "slow"}], [agent("slow", {"delay": 120})])
    created = stack.create(doc)
    stack.execute(created["id"])
    wait_for(lambda: stack.tasks(stack.mission(created["id"]))["Sleep"]["status"] == "running", 30, "running", stack)
    started = time.monotonic()
    response = stack.request("POST", f"/v1/missions/{created['id']}/abort")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"

    def attempt_stopped() -> bool:
        import psycopg

        with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
            row = conn.execute(
                "SELECT status FROM attempts WHERE task_id = %s",
                (stack.tasks(stack.mission(created["id"]))["Sleep"]["id"],),
            ).fetchone()
        return row is not None and row[0] == "cancelled"

    wait_for(attempt_stopped, 2, "the attempt to be cancelled", stack)
    assert time.monotonic() - started < 2.5
    final = stack.mission(created["id"])
    assert final["status"] == "cancelled" and stack.tasks(final)["Sleep"]["status"] == "cancelled"


def test_deadline_fails_a_mission_that_runs_too_long(stack: Stack) -> None:
    from datetime import datetime, timedelta

    deadline = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    doc = mission("late", [{"title": "Slow", "assignTo": "slow"}], [agent("slow", {"delay": 60})], deadline=deadline)
    created = stack.create(doc)
    stack.execute(created["id"])
    final = stack.wait_status(created["id"], "failed", "completed", timeout=30)
    assert final["status"] == "failed" and final["failureReason"] == "deadline_exceeded"
    assert stack.tasks(final)["Slow"]["status"] == "cancelled"


def test_a_task_added_while_active_runs_after_its_dependency(stack: Stack) -> None:
    doc = mission("growing", [{"title": "First", "assignTo": "a"}], [agent("a", {"delay": 2, "output": "one"})])
    created = stack.create(doc)
    stack.execute(created["id"])
    added = stack.request(
        "POST",
        f"/v1/missions/{created['id']}/tasks",
        json={"title": "Second", "description": "after first", "assignTo": "a", "dependsOn": ["First"]},
    )
    assert added.status_code == 201, added.text
    final = stack.wait_status(created["id"], "completed", "failed")
    assert {t["title"]: t["status"] for t in final["tasks"]} == {"First": "completed", "Second": "completed"}


def test_execute_twice_while_active_is_a_conflict(stack: Stack) -> None:
    doc = mission("busy", [{"title": "Wait", "assignTo": "a"}], [agent("a", {"delay": 30})])
    created = stack.create(doc)
    stack.execute(created["id"])
    again = stack.request("POST", f"/v1/missions/{created['id']}/execute")
    assert again.status_code == 409 and again.json()["code"] == "conflict"
    stack.request("POST", f"/v1/missions/{created['id']}/abort")


def test_killed_worker_mid_task_does_not_stop_the_mission(stack: Stack) -> None:
    doc = mission(
        "survivor",
        [{"title": "Work", "assignTo": "a"}, {"title": "Then", "assignTo": "a", "dependsOn": ["Work"]}],
        [agent("a", {"delay": 4, "output": "done"})],
    )
    created = stack.create(doc)
    stack.execute(created["id"])
    wait_for(lambda: stack.tasks(stack.mission(created["id"]))["Work"]["status"] == "running", 30, "running", stack)
    stack.kill("worker")
    stack.start_worker("worker2")
    final = stack.wait_status(created["id"], "completed", "failed", "paused", timeout=90)
    assert final["status"] == "completed"
    assert stack.tasks(final)["Work"]["attempt"] >= 2


def test_killed_worker_parks_a_side_effect_task_for_approval(stack: Stack) -> None:
    doc = mission(
        "careful",
        [{"title": "Deploy", "assignTo": "a", "sideEffects": True}],
        [agent("a", {"delay": 4, "output": "deployed"})],
    )
    created = stack.create(doc)
    stack.execute(created["id"])
    wait_for(lambda: stack.tasks(stack.mission(created["id"]))["Deploy"]["status"] == "running", 30, "running", stack)
    stack.kill("worker")
    stack.start_worker("worker2")
    paused = stack.wait_status(created["id"], "paused", "completed", "failed", timeout=60)
    assert paused["status"] == "paused" and paused["pauseReason"] == "approval"
    assert stack.tasks(paused)["Deploy"]["status"] == "awaiting_approval"
    assert stack.request("POST", f"/v1/missions/{created['id']}/resume", json={"retryFailed": True}).ok
    final = stack.wait_status(created["id"], "completed", "failed", timeout=60)
    assert final["status"] == "completed"


def test_events_stream_replays_after_last_event_id(stack: Stack) -> None:
    created = stack.create(deploy_pipeline())
    stack.execute(created["id"])
    stack.wait_status(created["id"], "completed", "failed")
    url = f"{stack.url}/v1/missions/{created['id']}/events"
    everything = read_events(url, stack.headers, timeout=30)
    middle = everything[len(everything) // 2].id
    rest = read_events(url, {**stack.headers, "Last-Event-ID": str(middle)}, timeout=30)
    assert [e.id for e in rest] == [e.id for e in everything if e.id > middle]
