"""What can only fail at run time is refused when it is written: a deadline already in the past,
and a criterion whose scripted judge cannot score. Each answer is a 400 naming the field, and the
mission is left as it was."""

from __future__ import annotations

import copy
from typing import Any

from flask.testing import FlaskClient

SCRIPTED = {
    "name": "scripted",
    "prompt": "Do it.",
    "tasks": [{"title": "Write", "description": "Write it.", "assignTo": "writer"}],
    "team": {"name": "crew", "volatile": True, "agents": [{"name": "writer", "model": "scripted/writer"}]},
}
JUDGED = [{"criterion": "It is good"}]


def fields_of(answer: Any, status: int = 400) -> dict[str, list[str]]:
    assert answer.status_code == status, answer.get_json()
    body = answer.get_json()
    assert body["code"] == "bad_request"
    return body["details"]["fields"]  # type: ignore[no-any-return]


def mission(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(SCRIPTED)
    doc.update(changes)
    return doc


def test_a_deadline_in_the_past_is_refused_at_create_and_patch(client: FlaskClient, auth: dict[str, str]) -> None:
    fields = fields_of(client.post("/v1/missions", json=mission(deadline="2020-01-01T00:00:00Z"), headers=auth))
    assert list(fields) == ["deadline"] and "in the past" in fields["deadline"][0]
    created = client.post("/v1/missions", json=mission(deadline="2099-01-01T00:00:00Z"), headers=auth)
    assert created.status_code == 201
    mission_id = created.get_json()["id"]
    patched = client.patch(f"/v1/missions/{mission_id}", json={"deadline": "2020-01-01T00:00:00Z"}, headers=auth)
    assert list(fields_of(patched)) == ["deadline"]
    assert client.get(f"/v1/missions/{mission_id}", headers=auth).get_json()["deadline"] == "2099-01-01T00:00:00Z"
    # A relative deadline is the way to say "within an hour of each run's start".
    relative = client.patch(f"/v1/missions/{mission_id}", json={"deadline": None, "deadlineAfter": 3600}, headers=auth)
    assert relative.status_code == 200 and relative.get_json()["deadlineAfter"] == 3600


def test_a_criterion_a_scripted_judge_cannot_score_is_refused_at_create(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    doc = mission()
    doc["tasks"][0]["expectations"] = JUDGED
    fields = fields_of(client.post("/v1/missions", json=doc, headers=auth))
    assert list(fields) == ["tasks[0].expectations[0]"]
    assert "scripted judge without a script cannot score" in fields["tasks[0].expectations[0]"][0]
    doc["assessor"] = {"model": "scripted/judge", "script": [{"score": 4.5, "reason": "good"}]}
    assert client.post("/v1/missions", json=doc, headers=auth).status_code == 201


def test_a_criterion_a_scripted_judge_cannot_score_is_refused_when_a_task_is_added_or_changed(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    created = client.post("/v1/missions", json=mission(), headers=auth)
    assert created.status_code == 201
    body = created.get_json()
    task = {"title": "Check", "description": "Check it.", "assignTo": "writer", "expectations": JUDGED}
    added = client.post(f"/v1/missions/{body['id']}/tasks", json=task, headers=auth)
    assert list(fields_of(added)) == ["tasks[1].expectations[0]"]
    task_id = body["tasks"][0]["id"]
    changed = client.patch(f"/v1/missions/{body['id']}/tasks/{task_id}", json={"expectations": JUDGED}, headers=auth)
    assert list(fields_of(changed)) == ["tasks[0].expectations[0]"]
    after = client.get(f"/v1/missions/{body['id']}", headers=auth).get_json()
    assert [t["title"] for t in after["tasks"]] == ["Write"] and "expectations" not in after["tasks"][0]


def test_a_json_schema_expectation_whose_schema_is_invalid_is_refused_at_create(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    doc = mission()
    doc["tasks"][0]["expectations"] = [{"type": "json_schema", "schema": {"type": "nonsense"}}]
    fields = fields_of(client.post("/v1/missions", json=doc, headers=auth))
    assert list(fields) == ["tasks[0].expectations[0].schema"]
    assert "the schema is invalid" in fields["tasks[0].expectations[0].schema"][0]
    doc["tasks"][0]["expectations"] = [{"type": "json_schema", "schema": {"properties": {"a": {"pattern": "(x"}}}}]
    assert list(fields_of(client.post("/v1/missions", json=doc, headers=auth))) == ["tasks[0].expectations[0].schema"]
    doc["tasks"][0]["expectations"] = [{"type": "json_schema", "schema": {"type": "object", "required": ["a"]}}]
    assert client.post("/v1/missions", json=doc, headers=auth).status_code == 201
