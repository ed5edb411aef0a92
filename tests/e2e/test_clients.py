"""End to end, as a client at scale: a retried execute starts no second run, one key sending 30
requests a second is limited with the right headers while another key is not, and a key revoked
through the API is refused by a second API process within a second."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import running_stack
from tests.e2e.scenarios import agent, deploy_pipeline
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.e2e


def test_execute_repeated_with_the_same_key_after_the_run_finished_starts_no_second_run(stack: Stack) -> None:
    created = stack.create(deploy_pipeline())
    path = f"/v1/missions/{created['id']}/execute"
    first = stack.request("POST", path, headers={"Idempotency-Key": "deploy-2026-12-01"})
    assert first.status_code == 202, first.text
    done = stack.wait_status(created["id"], "completed", "failed")
    assert done["status"] == "completed"
    # The client's connection had dropped: it retries with the same key, after the run ended.
    again = stack.request("POST", path, headers={"Idempotency-Key": "deploy-2026-12-01"})
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    runs = stack.request("GET", f"/v1/missions/{created['id']}/runs").json()
    assert [r["id"] for r in runs] == [first.json()["id"]]
    assert stack.mission(created["id"])["executionCount"] == 1
    # A new key is a new request: a second run.
    third = stack.request("POST", path, headers={"Idempotency-Key": "deploy-2026-12-02"})
    assert third.status_code == 202 and third.json()["id"] != first.json()["id"]


@pytest.fixture
def limited_stack(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    limits = {"MISSIONS_RATE_LIMIT": "10", "MISSIONS_RATE_LIMIT_BURST": "20"}
    with running_stack(database_url, redis_url, tmp_path, limits) as running:
        yield running


def test_thirty_requests_a_second_from_one_key_are_limited_while_another_key_is_not(limited_stack: Stack) -> None:
    stack = limited_stack
    other = stack.request("POST", "/v1/keys", json={"name": "other"}).json()["key"]
    time.sleep(2.1)  # (a fresh window: the request above counted)
    answers: list[requests.Response] = []
    sent: list[float] = []
    others: list[requests.Response] = []
    session = requests.Session()
    start = time.monotonic()
    for n in range(30):
        time.sleep(max(0.0, start + n / 30 - time.monotonic()))  # 30 requests over one second
        sent.append(time.monotonic())
        answers.append(session.get(f"{stack.url}/v1/missions", headers=stack.headers, timeout=10))
        if n % 6 == 0:
            others.append(session.get(f"{stack.url}/v1/missions", headers={"Authorization": f"Bearer {other}"}))
    statuses = [a.status_code for a in answers]
    # Every request sent within the first window (2 s, less a margin) after the 20th is refused;
    # on an idle machine that is all of the last 10 (a loaded one may send the last ones later).
    in_window = [s for s, t in zip(statuses, sent, strict=True) if t < sent[0] + 1.9]
    assert len(in_window) > 20, f"the machine was too slow to send 21 requests in 1.9 s: {len(in_window)}"
    assert in_window == [200] * 20 + [429] * (len(in_window) - 20), statuses
    assert [int(a.headers["X-RateLimit-Remaining"]) for a in answers[:20]] == list(range(19, -1, -1))
    for answer in answers:
        assert answer.headers["X-RateLimit-Limit"] == "20"
        reset = int(answer.headers["X-RateLimit-Reset"])
        assert time.time() - 1 <= reset <= time.time() + 3
    for limited in answers[20 : len(in_window)]:
        assert limited.json()["code"] == "rate_limited"
        assert limited.headers["X-RateLimit-Remaining"] == "0"
        assert 1 <= int(limited.headers["Retry-After"]) <= 2
    assert "Retry-After" not in answers[0].headers
    assert [o.status_code for o in others] == [200] * len(others)
    assert [int(o.headers["X-RateLimit-Remaining"]) for o in others] == list(range(19, 19 - len(others), -1))


def test_a_key_revoked_through_the_api_is_refused_by_a_second_api_process_within_a_second(stack: Stack) -> None:
    second = Stack(env=dict(stack.env), logs=stack.logs, key=stack.key)
    try:
        second.start_api()
        created = stack.request("POST", "/v1/keys", json={"name": "doomed"}).json()
        doomed = {"Authorization": f"Bearer {created['key']}"}
        assert requests.get(f"{second.url}/v1/missions", headers=doomed, timeout=10).status_code == 200
        revoked = stack.request("DELETE", f"/v1/keys/{created['id']}")
        assert revoked.status_code == 200 and revoked.json()["revoked"] is True
        at = time.monotonic()

        def refused() -> bool:
            return requests.get(f"{second.url}/v1/missions", headers=doomed, timeout=10).status_code == 401

        wait_for(refused, 1.0, "the second API process to refuse the revoked key", second)
        assert time.monotonic() - at < 1.0
        assert requests.get(f"{second.url}/v1/missions", headers=stack.headers, timeout=10).status_code == 200
    finally:
        second.stop()


def test_a_reusable_agent_put_through_the_api_runs_a_mission_that_names_it(stack: Stack) -> None:
    put = stack.request("PUT", "/v1/agents/helper", json=agent("helper", {"output": "kept agent says hi"}))
    assert put.status_code == 201, put.text
    created = stack.create(
        {"name": "borrower", "tasks": [{"title": "Greet", "description": "Say hi.", "assignTo": "helper"}]}
    )
    stack.execute(created["id"])
    done = stack.wait_status(created["id"], "completed", "failed")
    assert done["status"] == "completed"
    assert stack.tasks(done)["Greet"]["output"] == "kept agent says hi"
    refused = stack.request("DELETE", "/v1/agents/helper")
    assert refused.status_code == 409 and refused.json()["details"]["missions"][0]["id"] == created["id"]
