"""End to end, operator control of a run: cancel one task, continue a failed run, request changes
at a checkpoint, checkpoints timing out, delays, and the public deploy-pipeline without a provider
key. Real API, worker and beat processes."""

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


def test_request_changes_at_a_checkpoint_reaches_the_agents_prompt(llm_stack: Stack, llm: FakeLLM) -> None:
    stack = llm_stack
    llm.script("writer", say("a draft without sources"), say("a draft citing three sources"))
    llm.script("publisher", say("published"))
    doc = mission(
        "review",
        [
            {"title": "Draft", "assignTo": "writer"},
            {"title": "Publish", "assignTo": "publisher", "dependsOn": ["Draft"]},
        ],
        [fake_agent("writer"), fake_agent("publisher")],
        checkpoints=[{"name": "edit", "afterTasks": ["Draft"], "blocksTasks": ["Publish"], "message": "Edit?"}],
    )
    created = stack.create(doc)
    stack.execute(created["id"])
    stack.wait_status(created["id"], "paused")
    body = {"decision": "request_changes", "feedback": "Cite your sources.", "redo": ["Draft"]}
    answer = stack.request("POST", f"/v1/missions/{created['id']}/review", json=body)
    assert answer.status_code == 200, answer.text
    wait_for(lambda: len(llm.seen("writer")) == 2, 30, "the draft to be redone", stack)
    redo_prompt = llm.seen("writer")[1].text
    assert "a draft without sources" in redo_prompt and "Cite your sources." in redo_prompt
    paused = stack.wait_status(created["id"], "paused")
    assert stack.tasks(paused)["Draft"]["output"] == "a draft citing three sources"
    assert stack.request("POST", f"/v1/missions/{created['id']}/review", json={"decision": "approve"}).ok
    final = stack.wait_status(created["id"], "completed", "failed")
    assert final["status"] == "completed"
    run = stack.request("GET", f"/v1/missions/{created['id']}/runs/{final['latestRunId']}").json()
    assert [r["decision"] for r in run["reviews"]] == ["request_changes", "approve"]
    assert run["reviews"][0]["reviewer"]["id"] and stack.key.startswith(run["reviews"][0]["reviewer"]["name"])


@pytest.mark.parametrize(
    ("on_timeout", "status", "publish"),
    [("approve", "completed", "completed"), ("reject", "failed", "cancelled"), ("fail", "failed", "skipped")],
)
def test_a_checkpoint_nobody_answers_times_out_into_its_on_timeout(
    stack: Stack, on_timeout: str, status: str, publish: str
) -> None:
    doc = mission(
        f"timeout-{on_timeout}",
        [{"title": "Draft", "assignTo": "a"}, {"title": "Publish", "assignTo": "a", "dependsOn": ["Draft"]}],
        [agent("a", {"output": "ok"})],
        checkpoints=[{"afterTasks": ["Draft"], "blocksTasks": ["Publish"], "timeout": 1, "onTimeout": on_timeout}],
    )
    created = stack.create(doc)
    stack.execute(created["id"])
    stack.wait_status(created["id"], "paused")
    final = stack.wait_status(created["id"], "completed", "failed", "cancelled", timeout=30)
    assert final["status"] == status
    assert stack.tasks(final)["Publish"]["status"] == publish
    run = stack.request("GET", f"/v1/missions/{created['id']}/runs/{final['latestRunId']}").json()
    assert [(r["decision"], r["timedOut"]) for r in run["reviews"]] == [(on_timeout, True)]


def test_a_delay_holds_its_blocked_task_for_its_duration(stack: Stack) -> None:
    doc = mission(
        "cool-off",
        [{"title": "Build", "assignTo": "a"}, {"title": "Deploy", "assignTo": "a", "dependsOn": ["Build"]}],
        [agent("a", {"output": "ok"})],
        delays=[{"name": "soak", "afterTasks": ["Build"], "blocksTasks": ["Deploy"], "duration": "PT3S"}],
    )
    created = stack.create(doc)
    events = stack.execute_streaming(created["id"])
    assert events[-1].data["status"] == "completed", stack.log_tail()
    names = [e.event for e in events]
    started = next(e for e in events if e.event == "delay:started")
    ended = next(e for e in events if e.event == "delay:ended")
    assert started.data["seconds"] == 3.0 and started.data["name"] == "soak"
    assert names.index("delay:started") < names.index("delay:ended")
    run = stack.request("GET", f"/v1/missions/{created['id']}/runs/{events[-1].data['runId']}").json()
    tasks = {t["title"]: t for t in stack.mission(created["id"])["tasks"]}
    assert tasks["Deploy"]["status"] == "completed"
    assert run["delays"][0]["status"] == "elapsed"
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        build_done, deploy_start = conn.execute(
            "SELECT (SELECT finished_at FROM attempts WHERE task_id = %s),"
            " (SELECT created_at FROM attempts WHERE task_id = %s)",
            (tasks["Build"]["id"], tasks["Deploy"]["id"]),
        ).fetchone()
    assert (deploy_start - build_done).total_seconds() >= 3.0  # held for its whole duration
    assert ended.id is not None and started.id is not None and ended.id > started.id
