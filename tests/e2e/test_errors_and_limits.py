"""End to end with real API, worker and beat processes: the ``error`` stream event, failures no retry
can fix spending no retry (provider calls counted on the loopback OpenAI fake), a reusable agent's
``maxConcurrency`` holding across two missions, and slow attempts started together (one broker
message) still running in parallel (call times recorded by the fake)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import running_stack
from tests.support.fake_llm import FakeLLM, fail, say
from tests.support.sse import read_events
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(database_url: str, redis_url: str, tmp_path: Path, llm: FakeLLM) -> Iterator[Stack]:
    """The operator's profile "fake" points at the OpenAI fake and needs no key; the default OpenAI
    endpoint has no key in the workers' environment."""
    env = {
        "OPENAI_API_KEY": "",
        "MISSIONS_PROVIDER_PROFILES": json.dumps({"fake": {"provider": "openai", "baseUrl": llm.openai_url}}),
        "MISSIONS_PROVIDER_BACKOFF_SECONDS": "0.05",
    }
    with running_stack(database_url, redis_url, tmp_path, env) as running:
        yield running


def stream_run(stack: Stack, document: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    created = stack.create(document)
    events = read_events(
        f"{stack.url}/v1/missions/{created['id']}/execute",
        {**stack.headers, "Accept": "text/event-stream"},
        method="POST",
        timeout=60,
    )
    return created, events


def test_a_missing_key_and_a_failing_assessment_are_streamed_as_error_events(stack: Stack) -> None:
    document = {
        "name": "errors",
        "qualityThreshold": 3.0,
        "tasks": [
            {"title": "Call OpenAI", "description": "d", "assignTo": "keyless", "maxRetries": 2},
            {
                "title": "Write well",
                "description": "d",
                "assignTo": "writer",
                "maxRetries": 1,
                "expectations": [{"criterion": "It is good"}],
            },
        ],
        "team": {
            "name": "crew",
            "volatile": True,
            "agents": [
                {"name": "keyless", "model": "openai/gpt-test"},
                {"name": "writer", "model": "scripted/w", "script": [{"output": "meh"}, {"output": "better"}]},
            ],
        },
        "assessor": {"model": "scripted/judge", "script": [{"score": 1.5, "reason": "vague"}, {"score": 4.5}]},
    }
    created, events = stream_run(stack, document)
    errors = [e.data for e in events if e.event == "error"]
    assert all(e["missionId"] == created["id"] and e["runId"] for e in errors)
    keyless = [e for e in errors if e.get("title") == "Call OpenAI"]
    assert [(e["code"], e["attempt"], e["willRetry"]) for e in keyless] == [("missing_key", 1, False)]
    assert "OPENAI_API_KEY" in keyless[0]["message"] and "not retried" in keyless[0]["message"]
    judged = [e for e in errors if e.get("title") == "Write well"]
    assert [(e["code"], e["attempt"], e["willRetry"]) for e in judged] == [("low_score", 1, True)]
    assert "below the quality threshold" in judged[0]["message"]
    # The error comes with the task's own status change, in the same step: never after it.
    kinds = [(e.event, (e.data or {}).get("title")) for e in events]
    failed_at = next(
        n
        for n, e in enumerate(events)
        if e.event == "task:status" and (e.data or {}).get("title") == "Call OpenAI" and e.data["status"] == "failed"
    )
    assert kinds.index(("error", "Call OpenAI")) < failed_at
    assert events[-1].event == "mission:done" and events[-1].data["status"] == "failed"
    tasks = {t["title"]: t for t in stack.mission(created["id"])["tasks"]}
    assert (tasks["Call OpenAI"]["status"], tasks["Write well"]["status"]) == ("failed", "completed")


def test_a_failure_no_retry_can_fix_spends_no_retry_but_still_escalates(stack: Stack, llm: FakeLLM) -> None:
    llm.script("gone", fail(404, "The model `gone` does not exist"))
    llm.script("locked", fail(401, "Incorrect API key provided"))
    llm.script("better", say("escalated answer"))
    document = {
        "name": "no-retry",
        "tasks": [
            {"title": "Unknown model", "description": "d", "assignTo": "lost", "maxRetries": 3},
            {"title": "Bad key", "description": "d", "assignTo": "locked", "maxRetries": 3},
            {
                "title": "Escalate",
                "description": "d",
                "assignTo": "lost",
                "maxRetries": 3,
                "retryPolicy": {"escalateModel": "openai/better", "escalateAfter": 2},
            },
        ],
        "team": {
            "name": "crew",
            "volatile": True,
            "agents": [
                {"name": "lost", "model": "openai/gone", "profile": "fake"},
                {"name": "locked", "model": "openai/locked", "profile": "fake"},
            ],
        },
    }
    created, events = stream_run(stack, document)
    assert events[-1].event == "mission:done"
    tasks = {t["title"]: t for t in stack.mission(created["id"])["tasks"]}
    assert tasks["Unknown model"]["status"] == "failed" and tasks["Bad key"]["status"] == "failed"
    assert tasks["Escalate"]["status"] == "completed"
    # One call each for the unknown model (two tasks used it once each) and the bad key: no retry.
    assert len(llm.seen("gone")) == 2 and len(llm.seen("locked")) == 1 and len(llm.seen("better")) == 1
    codes = {(e.data["title"], e.data["code"], e.data["willRetry"]) for e in events if e.event == "error"}
    assert codes == {
        ("Unknown model", "model_not_found", False),
        ("Bad key", "auth_failed", False),
        ("Escalate", "model_not_found", True),
    }
    detail = stack.request("GET", f"/v1/missions/{created['id']}").json()
    failed = {t["title"]: t for t in detail["tasks"]}
    assert "not retried" in failed["Bad key"]["error"]


def test_two_missions_sharing_an_agent_with_max_concurrency_one_never_overlap(stack: Stack, llm: FakeLLM) -> None:
    llm.script("slow", say("done", delay=0.4))
    shared = {"name": "shared", "model": "openai/slow", "profile": "fake", "maxConcurrency": 1}
    tasks = [{"title": f"T{i}", "description": "d", "assignTo": "shared"} for i in range(3)]
    owner = {"name": "owner", "tasks": tasks, "team": {"name": "crew", "volatile": False, "agents": [shared]}}
    first = stack.create(owner)
    second = stack.create({"name": "borrower", "tasks": tasks})  # the project's agent, by name
    stack.execute(first["id"])
    stack.execute(second["id"])
    for mission in (first, second):
        assert stack.wait_status(mission["id"], "completed", "failed", timeout=90)["status"] == "completed"
    calls = sorted((start, end) for model, start, end in llm.intervals if model == "slow")
    assert len(calls) == 6
    for (_, end), (start, _) in itertools.pairwise(calls):
        assert start >= end, f"two calls of the shared agent overlapped: {calls}"


def most_at_once(calls: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in calls] + [(end, -1) for _, end in calls])
    now = peak = 0
    for _, step in edges:  # (an end sorts before a start at the same instant)
        now += step
        peak = max(peak, now)
    return peak


def test_three_missions_sharing_an_agent_with_max_concurrency_two_run_two_at_a_time(stack: Stack, llm: FakeLLM) -> None:
    llm.script("pair", say("done", delay=0.4))
    shared = {"name": "pair", "model": "openai/pair", "profile": "fake", "maxConcurrency": 2}
    tasks = [{"title": f"T{i}", "description": "d", "assignTo": "pair"} for i in range(3)]
    created = [stack.create({"name": "owner", "tasks": tasks, "team": {"name": "c", "agents": [shared]}})]
    created += [stack.create({"name": f"borrower-{i}", "tasks": tasks}) for i in range(2)]
    for mission in created:
        stack.execute(mission["id"])
    for mission in created:
        assert stack.wait_status(mission["id"], "completed", "failed", timeout=90)["status"] == "completed"
    calls = [(start, end) for model, start, end in llm.intervals if model == "pair"]
    assert len(calls) == 9
    assert most_at_once(calls) == 2  # never more than the limit, and the limit is used


def test_slow_attempts_started_in_one_message_still_run_side_by_side(stack: Stack, llm: FakeLLM) -> None:
    """The five first attempts go in one message (MISSIONS_BATCH_ATTEMPTS, 8); the thread that gets
    it starts the first, and once that call outlasts MISSIONS_BATCH_RELEASE_SECONDS (0.05 s) the
    other four go back to the broker, a message each, for the worker's other threads."""
    llm.script("slow", say("done", delay=1.0))
    agent = {"name": "a", "model": "openai/slow", "profile": "fake"}
    tasks = [{"title": f"T{i}", "description": "d", "assignTo": "a"} for i in range(5)]
    created = stack.create({"name": "wide", "tasks": tasks, "team": {"name": "c", "volatile": True, "agents": [agent]}})
    stack.execute(created["id"])
    assert stack.wait_status(created["id"], "completed", "failed", timeout=60)["status"] == "completed"
    calls = [(start, end) for model, start, end in llm.intervals if model == "slow"]
    assert len(calls) == 5
    assert most_at_once(calls) == 4  # the stack's worker has 4 threads: the fifth waits for one
    starts = sorted(start for start, _ in calls)
    assert starts[3] - starts[0] < 0.8  # the first four side by side, not one after the other
    metrics = stack.request("GET", "/metrics").text
    assert "missions_attempts_released_total 4.0" in metrics
