"""End to end, operator control of a run: cancel one task, retry one, continue a failed run, and
the public deploy-pipeline without a provider key. Real API, worker and beat processes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.conftest import running_stack
from tests.e2e.scenarios import agent, mission
from tests.fixtures.examples import DEPLOY_PIPELINE
from tests.support.fake_llm import FakeLLM, fail, say
from tests.support.sse import read_events
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.e2e


def attempt_status(stack: Stack, task_id: str, attempt: int) -> str | None:
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT status FROM attempts WHERE task_id = %s AND attempt = %s", (task_id, attempt)
        ).fetchone()
    return None if row is None else str(row[0])


def test_cancelling_one_task_stops_its_agent_at_once_while_its_sibling_branch_completes(stack: Stack) -> None:
    doc = mission(
        "cancel-one",
        [
            {"title": "Stuck", "assignTo": "slow"},
            {"title": "After stuck", "assignTo": "quick", "dependsOn": ["Stuck"]},
            {"title": "Sibling", "assignTo": "steady"},
            {"title": "After sibling", "assignTo": "quick", "dependsOn": ["Sibling"]},
        ],
        [
            agent("slow", {"delay": 120}),
            agent("steady", {"delay": 1.5, "output": "s"}),
            agent("quick", {"output": "q"}),
        ],
    )
    created = stack.create(doc)
    stack.execute(created["id"])
    ids = {t["title"]: t["id"] for t in created["tasks"]}
    wait_for(lambda: stack.tasks(stack.mission(created["id"]))["Stuck"]["status"] == "running", 30, "running", stack)
    started = time.monotonic()
    answer = stack.request("POST", f"/v1/missions/{created['id']}/tasks/{ids['Stuck']}/cancel")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "cancelled"
    wait_for(lambda: attempt_status(stack, ids["Stuck"], 1) == "cancelled", 2, "the attempt to stop", stack)
    assert time.monotonic() - started < 2.5
    assert stack.mission(created["id"])["status"] == "active"  # the other branch goes on
    final = stack.wait_status(created["id"], "completed", "failed", "cancelled")
    tasks = stack.tasks(final)
    assert {title: t["status"] for title, t in tasks.items()} == {
        "Stuck": "cancelled",
        "After stuck": "skipped",
        "Sibling": "completed",
        "After sibling": "completed",
    }
    assert final["status"] == "failed" and final["failureReason"] == "task_cancelled"


@pytest.fixture
def llm_stack(database_url: str, redis_url: str, tmp_path: Path, llm: FakeLLM) -> Iterator[Stack]:
    """The stack with the operator's provider profile "fake" pointing at the loopback OpenAI fake."""
    env = {
        "OPENAI_API_KEY": "sk-test-openai",
        "MISSIONS_PROVIDER_PROFILES": json.dumps({"fake": {"provider": "openai", "baseUrl": llm.openai_url}}),
        "MISSIONS_PROVIDER_BACKOFF_SECONDS": "0.05",
    }
    with running_stack(database_url, redis_url, tmp_path, env) as running:
        yield running


def fake_agent(name: str) -> dict[str, Any]:
    return {"name": name, "role": f"{name} role", "model": f"openai/{name}", "profile": "fake"}


def test_a_failed_run_is_continued_without_calling_the_agents_of_completed_tasks_again(
    llm_stack: Stack, llm: FakeLLM
) -> None:
    stack = llm_stack
    llm.script("researcher", say("three sources on tides"))
    llm.script("checker", say("facts checked"))
    llm.script("writer", fail(400, "the model is overloaded with nonsense"), say("an essay on tides"))
    doc = mission(
        "continue",
        [
            {"title": "Research", "assignTo": "researcher"},
            {"title": "Check", "assignTo": "checker"},
            {"title": "Write", "assignTo": "writer", "dependsOn": ["Research", "Check"], "maxRetries": 0},
            {"title": "Publish", "assignTo": "checker", "dependsOn": ["Write"]},
        ],
        [fake_agent("researcher"), fake_agent("checker"), fake_agent("writer")],
    )
    created = stack.create(doc)
    run = stack.execute(created["id"])
    failed = stack.wait_status(created["id"], "failed", "completed", "cancelled")
    assert failed["status"] == "failed", stack.log_tail()
    assert stack.tasks(failed)["Publish"]["status"] == "skipped"
    calls_before = {m: len(llm.seen(m)) for m in ("researcher", "checker", "writer")}
    assert calls_before == {"researcher": 1, "checker": 1, "writer": 1}

    answer = stack.request("POST", f"/v1/missions/{created['id']}/resume", json={"retryFailed": True})
    assert answer.status_code == 200, answer.text
    final = stack.wait_status(created["id"], "completed", "failed", "cancelled")
    assert final["status"] == "completed", stack.log_tail()
    assert {m: len(llm.seen(m)) for m in ("researcher", "checker", "writer")} == {
        "researcher": 1,  # completed before: not called (nor paid) again
        "checker": 2,  # once for Check, once for Publish
        "writer": 2,
    }
    second = llm.seen("writer")[1].text
    assert "three sources on tides" in second and "facts checked" in second  # the kept outputs
    assert "Attempt 1 failed" in second
    runs = stack.request("GET", f"/v1/missions/{created['id']}/runs").json()
    assert [r["id"] for r in runs] == [run["id"]] and runs[0]["status"] == "completed"
    events = read_events(f"{stack.url}/v1/missions/{created['id']}/events", stack.headers, until=None, timeout=10)
    assert [e.data["status"] for e in events if e.event == "mission:done"] == ["failed", "completed"]


def test_the_public_deploy_pipeline_without_a_provider_key_ends_failed_and_its_stream_ends(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    with running_stack(database_url, redis_url, tmp_path, {"ANTHROPIC_API_KEY": ""}) as stack:
        created = stack.create(DEPLOY_PIPELINE)
        events = stack.execute_streaming(created["id"])
        assert events[-1].event == "mission:done", [e.event for e in events]
        assert events[-1].data["status"] == "failed" and events[-1].data["reason"] == "task_failed"
        assert "paused" not in [e.data.get("status") for e in events if e.event == "mission:status"]
        final = stack.mission(created["id"])
        assert final["status"] == "failed"
        assert {t["title"]: t["status"] for t in final["tasks"]} == {
            "Run tests": "failed",
            "Deploy to staging": "skipped",
        }
