"""End to end with real API, worker and beat processes: a webhook receiver on loopback gets a signed
`mission:done` that verifies with its secret, also when it was down for the first attempts; and a
run's own data reaches the model's prompt (the loopback OpenAI fake)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from tests.e2e.conftest import running_stack
from tests.support.fake_llm import FakeLLM, say
from tests.support.receiver import Receiver
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(database_url: str, redis_url: str, tmp_path: Path, llm: FakeLLM) -> Iterator[Stack]:
    env = {
        "OPENAI_API_KEY": "sk-test-openai",
        "MISSIONS_PROVIDER_PROFILES": json.dumps({"fake-openai": {"provider": "openai", "baseUrl": llm.openai_url}}),
        "MISSIONS_EGRESS_ALLOW": "127.0.0.1",  # the receiver and the fake are on loopback
        "MISSIONS_WEBHOOK_BACKOFF_SECONDS": "0.2",  # quick retries for the test
        "MISSIONS_WEBHOOK_TIMEOUT_SECONDS": "2",
    }
    with running_stack(database_url, redis_url, tmp_path, env) as running:
        yield running


def scripted(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "prompt": "Say hello.",
        "tasks": [{"title": "Greet", "description": "Write a greeting.", "assignTo": "writer"}],
        "team": {
            "name": "crew",
            "volatile": True,
            "agents": [{"name": "writer", "role": "Writes", "model": "scripted/demo", "script": [{"output": "Hi"}]}],
        },
    }


def deliveries(stack: Stack, webhook_id: str) -> list[dict[str, Any]]:
    answer = stack.request("GET", f"/v1/webhooks/{webhook_id}/deliveries")
    assert answer.status_code == 200, answer.text
    return list(answer.json())


def test_a_receiver_that_was_down_still_gets_a_signed_mission_done(stack: Stack) -> None:
    receiver = Receiver()  # its port stays closed until started: the receiver is down
    created = stack.request(
        "POST", "/v1/webhooks", json={"url": receiver.url, "events": ["mission:done"], "description": "ci"}
    )
    assert created.status_code == 201, created.text
    hook = created.json()
    mission = stack.create(scripted("greeter"))
    run = stack.execute(mission["id"])
    stack.wait_status(mission["id"], "completed")

    def failed_twice() -> bool:
        items = deliveries(stack, hook["id"])
        return bool(items) and len(items[0]["attempts"]) >= 2

    wait_for(failed_twice, 30, "two failed delivery attempts", stack)
    (down,) = deliveries(stack, hook["id"])
    assert down["status"] == "pending" and all(a["statusCode"] is None and a["error"] for a in down["attempts"])
    with receiver.start():
        wait_for(lambda: bool(receiver.received), 30, "the receiver to get the delivery", stack)
        wait_for(lambda: deliveries(stack, hook["id"])[0]["status"] == "delivered", 10, "delivered", stack)
    (got,) = receiver.received  # delivered once: the attempts before failed to connect
    event = Webhook(hook["secret"]).verify(got.body, got.headers)
    assert event["type"] == "mission:done"
    assert event["data"]["runId"] == run["id"] and event["data"]["status"] == "completed"
    (done,) = deliveries(stack, hook["id"])
    assert got.headers["webhook-id"] == done["id"]
    assert done["attemptCount"] >= 3 and done["attempts"][-1]["statusCode"] == 200


def test_a_runs_own_data_reaches_the_models_prompt(stack: Stack, llm: FakeLLM) -> None:
    llm.script("writer", say("Dear board, the numbers are in."), say("Dear team, all good."))
    document = {
        "name": "letter",
        "prompt": "Write the letter.",
        "data": {"audience": "team", "tone": "warm"},
        "tasks": [{"title": "Write", "description": "Write the letter for the audience.", "assignTo": "w"}],
        "team": {
            "name": "crew",
            "volatile": True,
            "agents": [{"name": "w", "role": "Writer", "model": "openai/writer", "profile": "fake-openai"}],
        },
    }
    mission = stack.create(document)
    answer = stack.request("POST", f"/v1/missions/{mission['id']}/execute", json={"data": {"audience": "board"}})
    assert answer.status_code == 202, answer.text
    run = answer.json()
    stack.wait_status(mission["id"], "completed")
    (seen,) = llm.seen("writer")
    assert '"audience": "board"' in seen.text and '"tone": "warm"' in seen.text and '"team"' not in seen.text
    shown = stack.request("GET", f"/v1/missions/{mission['id']}/runs/{run['id']}").json()
    assert shown["data"] == {"audience": "board"}
    assert shown["tasks"][0]["output"] == "Dear board, the numbers are in."
    # the next run without data sees the mission's own
    stack.execute(mission["id"])
    stack.wait_status(mission["id"], "completed")
    assert '"audience": "team"' in llm.seen("writer")[1].text
