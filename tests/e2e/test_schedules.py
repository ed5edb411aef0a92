"""End to end with real beat and worker processes: one-shot schedules and relative deadlines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.e2e.scenarios import agent, mission
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.e2e


def test_a_one_shot_schedule_a_few_seconds_ahead_runs_once(stack: Stack) -> None:
    at = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    doc = mission(
        "soon",
        [{"title": "Tick", "assignTo": "a"}],
        [agent("a", {"output": "ran"})],
        schedule=at.isoformat().replace("+00:00", "Z"),
    )
    created = stack.create(doc)
    assert created["status"] == "scheduled" and created["nextRunAt"] == at.isoformat().replace("+00:00", "Z")
    wait_for(lambda: stack.mission(created["id"])["status"] == "completed", 30, "the scheduled run", stack)
    final = stack.mission(created["id"])
    assert final["executionCount"] == 1 and "nextRunAt" not in final
    history = stack.request("GET", f"/v1/missions/{created['id']}/runs").json()
    assert [r["status"] for r in history] == ["completed"]
    fires = stack.request("GET", f"/v1/missions/{created['id']}/fires").json()
    assert [(f["status"], f["runId"]) for f in fires] == [("started", history[0]["id"])]


def test_a_relative_deadline_fails_a_long_running_mission(stack: Stack) -> None:
    doc = mission("slowpoke", [{"title": "Slow", "assignTo": "slow"}], [agent("slow", {"delay": 60})], deadlineAfter=2)
    created = stack.create(doc)
    stack.execute(created["id"])
    final = stack.wait_status(created["id"], "failed", "completed", timeout=30)
    assert final["status"] == "failed" and final["failureReason"] == "deadline_exceeded"
    events = stack.request("GET", f"/v1/missions/{created['id']}/events").text
    assert '"reason": "deadline_exceeded"' in events or '"reason":"deadline_exceeded"' in events
