"""API keys: every /v1 route needs one, a key sees only its own project, and keys are kept hashed."""

from __future__ import annotations

import copy
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from tests.fixtures.examples import CODE_REVIEW_PIPELINE, DEPLOY_PIPELINE

NEW_TASK = {"title": "Notify team", "description": "n", "assignTo": "deploy-agent", "dependsOn": ["Deploy to staging"]}


def assert_unauthorized(answer: Any) -> None:
    assert answer.status_code == 401
    assert answer.get_json()["code"] == "unauthorized"
    assert set(answer.get_json()) == {"error", "code", "details"}
    assert isinstance(answer.get_json()["error"], str) and answer.get_json()["error"]
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


def create(client: FlaskClient, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    answer = client.post("/v1/missions", json=copy.deepcopy(body), headers=headers)
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/missions"),
        ("POST", "/v1/missions"),
        ("GET", "/v1/missions/resumable"),
        ("GET", "/v1/missions/msn_x"),
        ("PATCH", "/v1/missions/msn_x"),
        ("DELETE", "/v1/missions/msn_x"),
        ("POST", "/v1/missions/msn_x/tasks"),
        ("PATCH", "/v1/missions/msn_x/tasks/task_x"),
        ("DELETE", "/v1/missions/msn_x/tasks/task_x"),
    ],
)
def test_a_request_without_a_key_is_unauthorized(client: FlaskClient, method: str, path: str) -> None:
    assert_unauthorized(client.open(path, method=method, json={}))


@pytest.mark.parametrize(
    "header",
    ["Basic dXNlcjpwYXNz", "Token {key}", "{key}", "Bearer", "Bearer ", "Bearer  "],
    ids=["basic", "token-scheme", "no-scheme", "bearer-alone", "bearer-empty", "bearer-blank"],
)
def test_a_key_under_the_wrong_scheme_is_unauthorized(client: FlaskClient, api_key: str, header: str) -> None:
    assert_unauthorized(client.get("/v1/missions", headers={"Authorization": header.format(key=api_key)}))


@pytest.mark.parametrize(
    "secret",
    ["sk_live_unknown", "not-a-key", "{key}x", "{key_upper}", "{key_prefix}"],
    ids=["unknown", "wrong-prefix", "extended", "case-changed", "truncated"],
)
def test_an_unknown_key_is_unauthorized(client: FlaskClient, api_key: str, secret: str) -> None:
    secret = secret.format(key=api_key, key_upper=api_key.upper(), key_prefix=api_key[:-1])
    assert_unauthorized(client.get("/v1/missions", headers={"Authorization": f"Bearer {secret}"}))


def test_the_bearer_scheme_is_case_insensitive(client: FlaskClient, api_key: str) -> None:
    assert client.get("/v1/missions", headers={"Authorization": f"bearer {api_key}"}).status_code == 200


def test_health_probes_need_no_key(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_another_projects_mission_is_not_found_on_every_route(
    client: FlaskClient, auth: dict[str, str], other_key: str, db: psycopg.Connection
) -> None:
    mine = create(client, auth, DEPLOY_PIPELINE)
    mission, task = mine["id"], mine["tasks"][0]["id"]
    stranger = {"Authorization": f"Bearer {other_key}"}
    rows_before = db.execute("SELECT * FROM missions ORDER BY id").fetchall()
    tasks_before = db.execute("SELECT * FROM tasks ORDER BY id").fetchall()

    attempts = [
        client.get(f"/v1/missions/{mission}", headers=stranger),
        client.patch(f"/v1/missions/{mission}", json={"qualityThreshold": 5}, headers=stranger),
        client.delete(f"/v1/missions/{mission}", headers=stranger),
        client.post(f"/v1/missions/{mission}/tasks", json=NEW_TASK, headers=stranger),
        client.patch(f"/v1/missions/{mission}/tasks/{task}", json={"priority": 5}, headers=stranger),
        client.delete(f"/v1/missions/{mission}/tasks/{task}", headers=stranger),
    ]

    for answer in attempts:
        assert answer.status_code == 404, (answer.request.method, answer.request.path, answer.get_json())
        assert answer.get_json()["code"] == "not_found"
        assert set(answer.get_json()) == {"error", "code", "details"}
    assert db.execute("SELECT * FROM missions ORDER BY id").fetchall() == rows_before
    assert db.execute("SELECT * FROM tasks ORDER BY id").fetchall() == tasks_before
    assert client.get(f"/v1/missions/{mission}", headers=auth).get_json()["tasks"][0]["id"] == task


def test_a_project_lists_only_its_own_missions(client: FlaskClient, auth: dict[str, str], other_key: str) -> None:
    stranger = {"Authorization": f"Bearer {other_key}"}
    mine = create(client, auth, DEPLOY_PIPELINE)
    theirs = create(client, stranger, CODE_REVIEW_PIPELINE)
    assert [m["id"] for m in client.get("/v1/missions", headers=auth).get_json()] == [mine["id"]]
    assert [m["id"] for m in client.get("/v1/missions", headers=stranger).get_json()] == [theirs["id"]]


def test_two_projects_may_each_have_a_mission_of_the_same_name(
    client: FlaskClient, auth: dict[str, str], other_key: str
) -> None:
    stranger = {"Authorization": f"Bearer {other_key}"}
    mine = create(client, auth, DEPLOY_PIPELINE)
    theirs = create(client, stranger, DEPLOY_PIPELINE)
    assert mine["id"] != theirs["id"]


def test_keys_are_stored_hashed(client: FlaskClient, api_key: str, other_key: str, db: psycopg.Connection) -> None:
    rows = db.execute("SELECT * FROM api_keys").fetchall()
    assert len(rows) == 2
    for secret in (api_key, other_key):
        body = secret.removeprefix("sk_live_")
        for row in rows:
            for value in row.values():
                text = value.hex() if isinstance(value, (bytes, memoryview)) else str(value)
                raw = bytes(value) if isinstance(value, (bytes, memoryview)) else text.encode()
                assert body not in text
                assert body.encode() not in raw
                assert body[:16] not in text  # not even a long stretch of the secret
    # And the keys still work, so what is stored is enough to recognise them.
    assert client.get("/v1/missions", headers={"Authorization": f"Bearer {api_key}"}).status_code == 200
