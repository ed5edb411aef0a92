"""Traces through real processes: with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, the API and the worker
export spans (OTLP over HTTP, to a receiver in this test); one run is one trace, from the request
through Celery's publish and execution (the context carried in the message headers) to each
attempt, its provider call, its assessment and the coordinator steps, with the run's ids. Work the
beat tick starts (a retry after its backoff) and a later request on the run (a resume) continue
the run's trace from the context stored on the run, the request's own trace linked with it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import running_stack
from tests.e2e.scenarios import agent, mission
from tests.support.fake_llm import FakeLLM, say
from tests.support.otlp import Receiver, Span, otlp_receiver
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with otlp_receiver() as running:
        yield running


@pytest.fixture
def traced(database_url: str, redis_url: str, tmp_path: Path, receiver: Receiver, llm: FakeLLM) -> Iterator[Stack]:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export every 0.1 s instead of 5 s
        "OPENAI_API_KEY": "sk-test-openai",
        "MISSIONS_PROVIDER_PROFILES": json.dumps({"fake-openai": {"provider": "openai", "baseUrl": llm.openai_url}}),
    }
    with running_stack(database_url, redis_url, tmp_path, env) as stack:
        yield stack


def wait_for_spans(receiver: Receiver, names: set[str], run_id: str, timeout: float = 20) -> list[Span]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spans = receiver.snapshot()
        if names <= {s.name for s in spans if s.attributes.get("missions.run_id") == run_id}:
            time.sleep(0.5)  # what the same batches still carry
            return receiver.snapshot()
        time.sleep(0.2)
    pytest.fail(f"spans {sorted(names)} of {run_id} not exported; got {sorted({s.name for s in receiver.snapshot()})}")


def test_one_run_is_one_trace_from_the_request_to_the_provider_call(
    traced: Stack, receiver: Receiver, llm: FakeLLM
) -> None:
    llm.script("writer", say("Release notes for 2.0.", usage=(120, 30)))
    created = traced.create(
        {
            "name": "traced",
            "prompt": "Write the notes.",
            "tasks": [
                {
                    "title": "Draft",
                    "description": "Draft the notes.",
                    "assignTo": "writer",
                    "expectations": [{"criterion": "Mentions the version"}],
                },
                {"title": "Publish", "description": "Publish them.", "assignTo": "bot", "dependsOn": ["Draft"]},
            ],
            "team": {
                "name": "crew",
                "volatile": True,
                "agents": [
                    {"name": "writer", "role": "Writes", "model": "openai/writer", "profile": "fake-openai"},
                    {"name": "bot", "role": "Publishes", "model": "scripted/bot", "script": [{"output": "done"}]},
                ],
            },
            "assessor": {"model": "scripted/judge", "script": [{"score": 4.5, "reason": "fine"}]},
        }
    )
    mission_id = created["id"]
    run_id = traced.execute(mission_id)["id"]
    traced.wait_status(mission_id, "completed")
    tasks = {t["title"]: t["id"] for t in traced.mission(mission_id)["tasks"]}

    spans = wait_for_spans(receiver, {"missions.attempt", "missions.assessment", "missions.step"}, run_id)
    by_id = {s.span_id: s for s in spans}
    [request] = [s for s in spans if s.kind == SERVER and s.name.startswith("POST") and "/execute" in s.name]
    assert request.service == "missions-api"
    trace = [s for s in spans if s.trace_id == request.trace_id]

    # The request's publish, then the worker's execution of that message, as parent and child
    # across the two processes: the context travelled in the message's headers. Publish, started by
    # Draft's verdict, was handed off to the thread that ran Draft (no message of its own).
    publishes = [s for s in trace if s.kind == PRODUCER and s.name == "apply_async/missions.run_task"]
    runs = [s for s in trace if s.kind == CONSUMER and s.name == "run/missions.run_task"]
    assert [p.service for p in publishes] == ["missions-api"]
    assert len(runs) == 1 and by_id[runs[0].parent_id].name == "apply_async/missions.run_task"
    assert {r.service for r in runs} == {"missions-worker"}

    # Each attempt, inside the message's execution, with the run's ids.
    attempts = {s.attributes["missions.task_id"]: s for s in trace if s.name == "missions.attempt"}
    assert set(attempts) == {tasks["Draft"], tasks["Publish"]}
    for task_id, span in attempts.items():
        assert span.attributes["missions.run_id"] == run_id
        assert span.attributes["missions.mission_id"] == mission_id
        assert span.attributes["missions.attempt"] == 1
        assert by_id[span.parent_id].name == "run/missions.run_task", task_id
    assert attempts[tasks["Draft"]].attributes["missions.model"] == "openai/writer"

    # The provider call: the agent's span, and the SDK's HTTP request under it (httpx instrumentation).
    [agent] = [s for s in trace if s.name == "missions.agent" and s.parent_id == attempts[tasks["Draft"]].span_id]
    calls = [s for s in trace if s.kind == CLIENT and s.parent_id == agent.span_id]
    assert calls and all(s.name.startswith("POST") for s in calls), [s.name for s in trace if s.kind == CLIENT]

    # The assessment and the coordinator steps, with their ids; the steps' SQL under them.
    [assessment] = [s for s in trace if s.name == "missions.assessment"]
    assert assessment.attributes["missions.task_id"] == tasks["Draft"]
    assert assessment.attributes["missions.mission_id"] == mission_id
    steps = [s for s in trace if s.name == "missions.step"]
    assert {s.attributes["missions.run_id"] for s in steps} == {run_id}
    assert {"RunStarted", "TaskFinished", "AssessmentScored"} <= {s.attributes["missions.event"] for s in steps}
    # The steps' SQL, from psycopg's instrumentation, under the steps.
    step_ids = {s.span_id for s in steps}
    assert any(s.kind == CLIENT and s.parent_id in step_ids and "postgresql" in str(s.attributes) for s in trace)

    # Nothing of the run went to another trace, and the beat tick started none.
    assert {s.trace_id for s in spans if s.attributes.get("missions.run_id") == run_id} == {request.trace_id}
    assert not [s for s in spans if s.name.endswith("/missions.tick")]


def ancestors(span: Span, by_id: dict[str, Span]) -> list[Span]:
    """The span's parent, its parent's parent... as far as they were exported."""
    chain = []
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        chain.append(span)
    return chain


def test_a_retry_after_its_backoff_is_in_the_runs_trace(traced: Stack, receiver: Receiver) -> None:
    doc = mission(
        "retried",
        [{"title": "Flaky", "assignTo": "a", "maxRetries": 1, "retryPolicy": {"backoff": 1}}],
        [agent("a", {"fail": "boom"}, {"output": "fine"})],
    )
    mission_id = traced.create(doc)["id"]
    run_id = traced.execute(mission_id)["id"]
    assert traced.wait_status(mission_id, "completed", "failed")["status"] == "completed"

    spans = wait_for_spans(receiver, {"missions.attempt", "missions.timer"}, run_id)
    by_id = {s.span_id: s for s in spans}
    [request] = [s for s in spans if s.kind == SERVER and "/execute" in s.name]
    attempts = {s.attributes["missions.attempt"]: s for s in spans if s.name == "missions.attempt"}
    assert set(attempts) == {1, 2}
    # The backoff timer fired in the worker's tick, in the run's trace; the retry came from it.
    [timer] = [s for s in spans if s.name == "missions.timer" and s.attributes.get("missions.run_id") == run_id]
    assert timer.attributes["missions.timer"] == "retry" and timer.service == "missions-worker"
    assert timer.trace_id == request.trace_id
    assert timer in ancestors(attempts[2], by_id)
    assert by_id[attempts[2].parent_id].name == "run/missions.run_task"
    assert {s.trace_id for s in spans if s.attributes.get("missions.run_id") == run_id} == {request.trace_id}
    assert not [s for s in spans if s.name.endswith("/missions.tick")]  # the tick's own spans still start none


def test_the_tasks_after_a_resume_are_in_the_runs_trace_and_the_resume_request_is_linked(
    traced: Stack, receiver: Receiver
) -> None:
    doc = mission(
        "resumed",
        [{"title": "Stage", "assignTo": "ops"}, {"title": "Prod", "assignTo": "ops", "dependsOn": ["Stage"]}],
        [agent("ops", {"output": "ok"})],
        checkpoints=[{"afterTasks": ["Stage"], "blocksTasks": ["Prod"], "message": "Ship?"}],
    )
    mission_id = traced.create(doc)["id"]
    run_id = traced.execute(mission_id)["id"]
    traced.wait_status(mission_id, "paused")
    response = traced.request("POST", f"/v1/missions/{mission_id}/resume", json={"retryFailed": False})
    assert response.status_code == 200, response.text
    assert traced.wait_status(mission_id, "completed", "failed")["status"] == "completed"
    tasks = {t["title"]: t["id"] for t in traced.mission(mission_id)["tasks"]}

    spans = wait_for_spans(receiver, {"missions.attempt", "missions.command"}, run_id)
    by_id = {s.span_id: s for s in spans}
    [execute] = [s for s in spans if s.kind == SERVER and "/execute" in s.name]
    [resume] = [s for s in spans if s.kind == SERVER and s.name.startswith("POST") and "/resume" in s.name]
    [command] = [s for s in spans if s.name == "missions.command"]
    assert command.attributes["missions.command"] == "resume"
    assert command.attributes["missions.run_id"] == run_id and command.service == "missions-api"
    # The command is in the run's trace, and the request's own trace and the run's point at each other.
    assert command.trace_id == execute.trace_id != resume.trace_id
    assert (resume.trace_id, resume.span_id) in command.links
    assert (command.trace_id, command.span_id) in resume.links
    # The task the resume released ran in the run's trace, from the resume's message.
    [prod] = [s for s in spans if s.name == "missions.attempt" and s.attributes["missions.task_id"] == tasks["Prod"]]
    assert prod.trace_id == execute.trace_id
    assert command in ancestors(prod, by_id)
    assert {s.trace_id for s in spans if s.attributes.get("missions.run_id") == run_id} == {execute.trace_id}


def test_attempts_of_one_message_and_those_sent_on_from_it_are_in_the_runs_trace(
    traced: Stack, receiver: Receiver, llm: FakeLLM
) -> None:
    """Three tasks start together: one message (``missions.run_tasks``); the first call is slow, so
    the releaser sends the other two on from its own thread, still in the run's trace."""
    llm.script("slow", say("done", delay=0.6))
    slow = {"name": "a", "role": "r", "model": "openai/slow", "profile": "fake-openai"}
    created = traced.create(mission("wide", [{"title": f"T{i}", "assignTo": "a"} for i in range(3)], [slow]))
    run_id = traced.execute(created["id"])["id"]
    assert traced.wait_status(created["id"], "completed", "failed")["status"] == "completed"

    def attempts_of_run() -> list[Span]:
        spans = receiver.snapshot()
        return [s for s in spans if s.name == "missions.attempt" and s.attributes.get("missions.run_id") == run_id]

    deadline = time.monotonic() + 20
    while len(attempts_of_run()) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # (what the same export batches still carry)
    spans = receiver.snapshot()
    by_id = {s.span_id: s for s in spans}
    [request] = [s for s in spans if s.kind == SERVER and "/execute" in s.name]
    attempts = attempts_of_run()
    assert len(attempts) == 3
    parents = sorted(by_id[a.parent_id].name for a in attempts)
    assert parents == ["run/missions.run_task", "run/missions.run_task", "run/missions.run_tasks"]
    assert {a.trace_id for a in attempts} == {request.trace_id}
    for released in (a for a in attempts if by_id[a.parent_id].name == "run/missions.run_task"):
        publish = by_id[by_id[released.parent_id].parent_id]  # sent by the releaser, under the first's execution
        assert publish.name == "apply_async/missions.run_task" and publish.trace_id == request.trace_id
