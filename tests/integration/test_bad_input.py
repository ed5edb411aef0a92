"""Every kind of bad request is refused with a 4xx in the one error shape, names the offending
field, and leaves the database exactly as it was."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from api.http.app import create_app
from config import Settings
from tests.fixtures.examples import DEPLOY_PIPELINE
from workers.wiring import Services

Body = dict[str, Any]


def mission(**changes: Any) -> Body:
    """The documented deploy pipeline under another name, with ``changes`` applied on top."""
    body = copy.deepcopy(DEPLOY_PIPELINE)
    body["name"] = "bad-input-probe"
    body.update(changes)
    return body


def with_task(index: int, **changes: Any) -> Body:
    body = mission()
    body["tasks"][index].update(changes)
    return body


def with_gate(**changes: Any) -> Body:
    body = mission()
    body["qualityGates"][0].update(changes)
    return body


def without(key: str) -> Body:
    body = mission()
    del body[key]
    return body


def two_tasks(a_depends_on: list[str], b_depends_on: list[str]) -> Body:
    tasks = [
        {"title": "A", "description": "a", "assignTo": "backend-dev", "dependsOn": a_depends_on},
        {"title": "B", "description": "b", "assignTo": "backend-dev", "dependsOn": b_depends_on},
    ]
    return mission(tasks=tasks, qualityGates=[])


def many_tasks(count: int) -> bytes:
    """A compact JSON body with ``count`` tasks, each as small as the schema allows."""
    tasks = ",".join(f'{{"title":"t{i}","description":"d","assignTo":"a"}}' for i in range(count))
    return (
        '{"name":"too-many-tasks","team":{"agents":[{"name":"a","model":"scripted/x"}]},"tasks":[' + tasks + "]}"
    ).encode()


@dataclass(frozen=True)
class Case:
    body: Body | list[Any] | bytes | str
    status: int
    field: str | None = None  # the entry expected in details.fields (None: not a field problem)
    message: str | None = None  # text the error message must contain
    method: str = "POST"
    path: str = "/v1/missions"  # {mission} and {task} name the mission created before each case
    content_type: str = "application/json"
    max_body_bytes: int | None = None  # serve the case from an app with this body limit instead


PATCH_MISSION = "/v1/missions/{mission}"
PATCH_TASK = "/v1/missions/{mission}/tasks/{task}"

CASES: dict[str, Case] = {
    "malformed JSON": Case(b'{"name": "x", "tasks": [', 400, message="malformed JSON"),
    "wrong Content-Type": Case(json.dumps(mission()), 415, content_type="text/plain", message="application/json"),
    "body over 1 MiB": Case(mission(prompt="x" * (1 << 20)), 413),
    "body a JSON array": Case([mission()], 400, field="body"),
    "missing name": Case(without("name"), 400, field="name"),
    "missing tasks": Case(without("tasks"), 400, field="tasks"),
    "qualityThreshold a string": Case(mission(qualityThreshold="high"), 400, field="qualityThreshold"),
    "maxRetries a string": Case(with_task(0, maxRetries="2"), 400, field="tasks[0].maxRetries"),
    "sideEffects a string": Case(with_task(1, sideEffects="yes"), 400, field="tasks[1].sideEffects"),
    "tasks not a list": Case(mission(tasks={"title": "Run tests"}), 400, field="tasks"),
    "unknown top-level field": Case(mission(colour="blue"), 400, field="colour"),
    "unknown task field": Case(with_task(1, owner="bob"), 400, field="tasks[1].owner"),
    "empty tasks": Case(mission(tasks=[], qualityGates=[]), 400, field="tasks"),
    "duplicate titles": Case(with_task(1, title="Run tests", dependsOn=[]), 400, field="tasks[1].title"),
    "unknown assignTo": Case(with_task(0, assignTo="nobody"), 400, field="tasks[0].assignTo", message="nobody"),
    "dangling dependsOn": Case(
        with_task(1, dependsOn=["Run tets"]), 400, field="tasks[1].dependsOn[0]", message="Run tets"
    ),
    "self dependsOn": Case(with_task(0, dependsOn=["Run tests"]), 400, field="tasks[0].dependsOn[0]"),
    "dependency cycle": Case(two_tasks(["B"], ["A"]), 400, field="tasks", message='"A" -> "B" -> "A"'),
    "qualityThreshold 0": Case(mission(qualityThreshold=0), 400, field="qualityThreshold"),
    "qualityThreshold 6": Case(mission(qualityThreshold=6), 400, field="qualityThreshold"),
    "gate minScore 7": Case(with_gate(minScore=7), 400, field="qualityGates[0].minScore"),
    "bad ISO deadline": Case(mission(deadline="next tuesday"), 400, field="deadline"),
    "bad cron schedule": Case(mission(schedule="61 * * * *"), 400, field="schedule", message="61 * * * *"),
    "gate naming an unknown task": Case(
        with_gate(afterTasks=["Lint"]), 400, field="qualityGates[0].afterTasks[0]", message="Lint"
    ),
    "checkpoint naming an unknown task": Case(
        mission(checkpoints=[{"afterTasks": ["Smoke test"], "message": "look"}]),
        400,
        field="checkpoints[0].afterTasks[0]",
        message="Smoke test",
    ),
    "name over 200 chars": Case(mission(name="n" * 201), 400, field="name"),
    "task description over 20,000 chars": Case(
        with_task(0, description="d" * 20_001), 400, field="tasks[0].description"
    ),
    "more than 10,000 tasks": Case(
        many_tasks(10_001), 400, field="tasks", message="at most 10000 tasks", max_body_bytes=4 << 20
    ),  # so the task rule answers, never the 1 MiB limit
    "duplicate mission name": Case(copy.deepcopy(DEPLOY_PIPELINE), 409, field="name", message="deploy-pipeline"),
    "PATCH with unknown field": Case(
        {"qualityThreshold": 4.5, "colour": "blue"}, 400, field="colour", method="PATCH", path=PATCH_MISSION
    ),
    "PATCH of a task with a bad type": Case(
        {"priority": "high"}, 400, field="priority", method="PATCH", path=PATCH_TASK
    ),
    "PATCH of a task with an unknown field": Case(
        {"owner": "bob"}, 400, field="owner", method="PATCH", path=PATCH_TASK
    ),
    "added task with a dangling dependsOn": Case(
        {"title": "Notify team", "description": "n", "assignTo": "deploy-agent", "dependsOn": ["Deploy to prod"]},
        400,
        field="tasks[2].dependsOn[0]",
        path="/v1/missions/{mission}/tasks",
    ),
}


def snapshot(db: psycopg.Connection) -> dict[str, Any]:
    """Row counts plus every stored mission and task, to see that nothing at all changed."""
    return {
        "missions": db.execute("SELECT count(*) AS n FROM missions").fetchone()["n"],  # type: ignore[index]
        "tasks": db.execute("SELECT count(*) AS n FROM tasks").fetchone()["n"],  # type: ignore[index]
        "agents": db.execute("SELECT count(*) AS n FROM agents").fetchone()["n"],  # type: ignore[index]
        "mission_rows": db.execute("SELECT * FROM missions ORDER BY id").fetchall(),
        "task_rows": db.execute("SELECT * FROM tasks ORDER BY id").fetchall(),
    }


def encode(case: Case) -> bytes:
    if isinstance(case.body, bytes):
        return case.body
    if isinstance(case.body, str):
        return case.body.encode()
    return json.dumps(case.body).encode()


@pytest.fixture
def client_for(settings: Settings, services: Services, client: FlaskClient) -> Callable[[int | None], FlaskClient]:
    def build(max_body_bytes: int | None) -> FlaskClient:
        if max_body_bytes is None:
            return client
        return create_app(settings.replace(max_body_bytes=max_body_bytes), services).test_client()

    return build


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_a_bad_request_is_refused_by_name_and_changes_nothing(
    case: Case,
    client: FlaskClient,
    client_for: Callable[[int | None], FlaskClient],
    auth: dict[str, str],
    db: psycopg.Connection,
) -> None:
    existing = client.post("/v1/missions", json=copy.deepcopy(DEPLOY_PIPELINE), headers=auth)
    assert existing.status_code == 201, existing.get_json()
    path = case.path.format(mission=existing.get_json()["id"], task=existing.get_json()["tasks"][0]["id"])
    before = snapshot(db)

    body = encode(case)
    if case.status != 413:
        # The rule under test must be the one that answers, not the body size limit.
        assert len(body) <= (case.max_body_bytes or Settings().max_body_bytes)
    answer = client_for(case.max_body_bytes).open(
        path, method=case.method, data=body, headers={**auth, "Content-Type": case.content_type}
    )

    assert answer.status_code == case.status, answer.get_data(as_text=True)[:2000]
    error = answer.get_json()
    assert answer.mimetype == "application/json"
    assert set(error) == {"error", "code", "details"}
    assert isinstance(error["error"], str) and error["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["details"], dict)
    assert error["code"] == {409: "conflict"}.get(case.status, "bad_request")
    if case.field is not None:
        fields = error["details"]["fields"]
        assert case.field in fields, fields
        assert all(isinstance(m, str) and m for m in fields[case.field])
    if case.message is not None:
        assert case.message in error["error"], error["error"]

    assert snapshot(db) == before
