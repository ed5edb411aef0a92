"""The public documentation's curl flow, request by request, checked field by field.

Clients copy these examples verbatim, so every answer here must have exactly the documented shape.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.fixtures.examples import CODE_REVIEW_PIPELINE, DEPLOY_PIPELINE
from workers.support.clock import utcnow

MISSION_ID = re.compile(r"^msn_[a-z0-9]{20,}$")
TASK_ID = re.compile(r"^task_[a-z0-9]{20,}$")

SUMMARY_KEYS = {"id", "name", "status", "executionCount", "qualityThreshold", "taskCount"}
CREATED_KEYS = {"id", "name", "status", "prompt", "qualityThreshold", "executionCount", "tasks"}

NOTIFY_TEAM = {
    "title": "Notify team",
    "description": "Send a Slack notification with the deployment status.",
    "assignTo": "deploy-agent",
    "dependsOn": ["Deploy to staging"],
    "sideEffects": True,
}


def create(client: FlaskClient, auth: dict[str, str], body: dict[str, Any]) -> Any:
    return client.post("/v1/missions", json=copy.deepcopy(body), headers=auth)


def assert_created_like_the_docs(answer: Any, body: dict[str, Any]) -> None:
    """The create answer of the docs: the mission head and a brief of each task, nothing else."""
    assert answer.status_code == 201, answer.get_json()
    mission = answer.get_json()
    assert set(mission) == CREATED_KEYS
    assert MISSION_ID.match(mission["id"]), mission["id"]
    assert mission["name"] == body["name"]
    assert mission["status"] == "draft"
    assert mission["prompt"] == body["prompt"]
    assert mission["qualityThreshold"] == 4.0
    assert mission["executionCount"] == 0

    first, second = mission["tasks"]
    assert set(first) == {"id", "title", "assignTo", "status"}  # no dependsOn key when it has none
    assert TASK_ID.match(first["id"]), first["id"]
    assert first["title"] == body["tasks"][0]["title"]
    assert first["assignTo"] == body["tasks"][0]["assignTo"]
    assert first["status"] == "draft"

    assert set(second) == {"id", "title", "assignTo", "status", "dependsOn"}
    assert TASK_ID.match(second["id"]), second["id"]
    assert second["title"] == body["tasks"][1]["title"]
    assert second["assignTo"] == body["tasks"][1]["assignTo"]
    assert second["status"] == "draft"
    assert second["dependsOn"] == [body["tasks"][0]["title"]]
    assert first["id"] != second["id"]


def test_the_documented_deploy_pipeline_flow_works_request_by_request(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    # 1. Create mission
    created = create(client, auth, DEPLOY_PIPELINE)
    assert_created_like_the_docs(created, DEPLOY_PIPELINE)
    mission_id = created.get_json()["id"]
    assert created.headers["Location"] == f"/v1/missions/{mission_id}"

    # 2. List missions: summaries with exactly the documented keys
    listed = client.get("/v1/missions", headers=auth)
    assert listed.status_code == 200
    assert listed.get_json() == [
        {
            "id": mission_id,
            "name": "deploy-pipeline",
            "status": "draft",
            "executionCount": 0,
            "qualityThreshold": 4.0,
            "taskCount": 2,
        }
    ]
    assert set(listed.get_json()[0]) == SUMMARY_KEYS

    # 3. Get mission: the mission with its tasks and their status
    got = client.get(f"/v1/missions/{mission_id}", headers=auth)
    assert got.status_code == 200
    before = got.get_json()
    assert before["id"] == mission_id
    assert before["name"] == "deploy-pipeline"
    assert before["status"] == "draft"
    assert before["prompt"] == DEPLOY_PIPELINE["prompt"]
    assert before["qualityThreshold"] == 4.0
    assert before["executionCount"] == 0
    assert before["team"] == DEPLOY_PIPELINE["team"]
    assert before["qualityGates"] == DEPLOY_PIPELINE["qualityGates"]
    assert [t["title"] for t in before["tasks"]] == ["Run tests", "Deploy to staging"]
    assert [t["status"] for t in before["tasks"]] == ["draft", "draft"]
    assert [t["id"] for t in before["tasks"]] == [t["id"] for t in created.get_json()["tasks"]]
    for served, sent in zip(before["tasks"], DEPLOY_PIPELINE["tasks"], strict=False):
        for key, value in sent.items():
            assert served[key] == value, key

    # 4. Update mission: only the fields given change. The documented deadline (2026-04-01) may be
    # in the past by now, which is refused (a run would stop at once); the same request with a
    # future date is accepted.
    if utcnow() >= datetime(2026, 4, 1, tzinfo=UTC):
        stale = client.patch(
            f"/v1/missions/{mission_id}",
            json={"qualityThreshold": 4.5, "deadline": "2026-04-01T00:00:00Z"},
            headers=auth,
        )
        assert stale.status_code == 400 and list(stale.get_json()["details"]["fields"]) == ["deadline"]
    patched = client.patch(
        f"/v1/missions/{mission_id}",
        json={"qualityThreshold": 4.5, "deadline": "2099-04-01T00:00:00Z"},
        headers=auth,
    )
    assert patched.status_code == 200, patched.get_json()
    after = patched.get_json()
    assert after["qualityThreshold"] == 4.5
    assert after["deadline"] == "2099-04-01T00:00:00Z"
    assert client.get(f"/v1/missions/{mission_id}", headers=auth).get_json() == after
    unchanged = {k: v for k, v in before.items() if k not in ("qualityThreshold", "deadline", "updatedAt")}
    assert {k: after[k] for k in unchanged} == unchanged
    assert set(after) == set(before) | {"deadline"}

    # 5. Add task to mission
    added = client.post(f"/v1/missions/{mission_id}/tasks", json=NOTIFY_TEAM, headers=auth)
    assert added.status_code == 201, added.get_json()
    task = added.get_json()
    assert TASK_ID.match(task["id"]), task["id"]
    assert task["title"] == "Notify team"
    assert task["assignTo"] == "deploy-agent"
    assert task["dependsOn"] == ["Deploy to staging"]
    assert task["sideEffects"] is True
    assert task["status"] == "draft"
    task_id = task["id"]
    assert [t["title"] for t in client.get(f"/v1/missions/{mission_id}", headers=auth).get_json()["tasks"]] == [
        "Run tests",
        "Deploy to staging",
        "Notify team",
    ]
    assert client.get("/v1/missions", headers=auth).get_json()[0]["taskCount"] == 3

    # 6. Update task in mission
    updated = client.patch(f"/v1/missions/{mission_id}/tasks/{task_id}", json={"priority": 5}, headers=auth)
    assert updated.status_code == 200, updated.get_json()
    assert updated.get_json()["priority"] == 5
    assert {k: v for k, v in updated.get_json().items() if k != "priority"} == task
    served = client.get(f"/v1/missions/{mission_id}", headers=auth).get_json()["tasks"][2]
    assert served["priority"] == 5

    # 7. Delete task from mission
    removed = client.delete(f"/v1/missions/{mission_id}/tasks/{task_id}", headers=auth)
    assert removed.status_code == 204
    assert removed.data == b""
    remaining = client.get(f"/v1/missions/{mission_id}", headers=auth).get_json()["tasks"]
    assert [t["title"] for t in remaining] == ["Run tests", "Deploy to staging"]

    # 8. Delete mission
    deleted = client.delete(f"/v1/missions/{mission_id}", headers=auth)
    assert deleted.status_code == 204
    assert deleted.data == b""
    gone = client.get(f"/v1/missions/{mission_id}", headers=auth)
    assert gone.status_code == 404
    assert gone.get_json()["code"] == "not_found"
    assert client.get("/v1/missions", headers=auth).get_json() == []


def test_the_documented_code_review_pipeline_is_created_as_shown(client: FlaskClient, auth: dict[str, str]) -> None:
    created = create(client, auth, CODE_REVIEW_PIPELINE)
    assert_created_like_the_docs(created, CODE_REVIEW_PIPELINE)
    mission_id = created.get_json()["id"]
    listed = client.get("/v1/missions", headers=auth).get_json()
    assert listed == [
        {
            "id": mission_id,
            "name": "code-review-pipeline",
            "status": "draft",
            "executionCount": 0,
            "qualityThreshold": 4.0,
            "taskCount": 2,
        }
    ]


def test_both_documented_missions_live_side_by_side_in_one_project(client: FlaskClient, auth: dict[str, str]) -> None:
    first = create(client, auth, DEPLOY_PIPELINE)
    second = create(client, auth, CODE_REVIEW_PIPELINE)
    assert first.status_code == second.status_code == 201
    listed = client.get("/v1/missions", headers=auth).get_json()
    assert [m["name"] for m in listed] == ["deploy-pipeline", "code-review-pipeline"]


@pytest.mark.parametrize("body", [DEPLOY_PIPELINE, CODE_REVIEW_PIPELINE], ids=["deploy", "code-review"])
def test_mission_and_task_ids_are_unguessable(client: FlaskClient, auth: dict[str, str], body: dict[str, Any]) -> None:
    first = create(client, auth, body).get_json()
    client.delete(f"/v1/missions/{first['id']}", headers=auth)
    second = create(client, auth, body).get_json()
    assert first["id"] != second["id"]
    ids = [first["id"], second["id"]] + [t["id"] for m in (first, second) for t in m["tasks"]]
    assert len(set(ids)) == len(ids)
    for value in ids:
        prefix, _, rest = value.partition("_")
        assert prefix in ("msn", "task")
        assert len(rest) >= 20, value
        assert not rest.isdigit(), value
