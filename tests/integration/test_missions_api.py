"""The mission and task routes beyond the documented examples: list filters, partial updates that
re-validate the whole mission, conflicts, task renames, and the service routes."""

from __future__ import annotations

import copy
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from tests.fixtures.examples import CODE_REVIEW_PIPELINE, DEPLOY_PIPELINE


def create(
    client: FlaskClient, auth: dict[str, str], body: dict[str, Any] = DEPLOY_PIPELINE, **changes: Any
) -> dict[str, Any]:
    document = copy.deepcopy(body)
    document.update(changes)
    answer = client.post("/v1/missions", json=document, headers=auth)
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()  # type: ignore[no-any-return]


def get(client: FlaskClient, auth: dict[str, str], mission_id: str) -> dict[str, Any]:
    answer = client.get(f"/v1/missions/{mission_id}", headers=auth)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()  # type: ignore[no-any-return]


def names(answer: Any) -> list[str]:
    assert answer.status_code == 200, answer.get_json()
    return [m["name"] for m in answer.get_json()]


def assert_error(answer: Any, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.get_json()
    error = answer.get_json()
    assert set(error) == {"error", "code", "details"}
    assert error["code"] == code
    return error  # type: ignore[no-any-return]


def set_status(db: psycopg.Connection, mission_id: str, status: str) -> None:
    db.execute("UPDATE missions SET status = %s WHERE id = %s", (status, mission_id))


# --- list -----------------------------------------------------------------------------------


def test_missions_are_listed_in_creation_order_with_limit_and_offset(client: FlaskClient, auth: dict[str, str]) -> None:
    for i in range(5):
        create(client, auth, name=f"mission-{i}")
    assert names(client.get("/v1/missions", headers=auth)) == [f"mission-{i}" for i in range(5)]
    assert names(client.get("/v1/missions?limit=2", headers=auth)) == ["mission-0", "mission-1"]
    assert names(client.get("/v1/missions?limit=2&offset=2", headers=auth)) == ["mission-2", "mission-3"]
    assert names(client.get("/v1/missions?offset=4", headers=auth)) == ["mission-4"]
    assert names(client.get("/v1/missions?offset=5", headers=auth)) == []


def test_missions_are_filtered_by_status(client: FlaskClient, auth: dict[str, str]) -> None:
    create(client, auth, name="drafted")
    create(client, auth, name="nightly", schedule="0 3 * * *")
    assert names(client.get("/v1/missions?status=scheduled", headers=auth)) == ["nightly"]
    assert names(client.get("/v1/missions?status=draft", headers=auth)) == ["drafted"]
    assert names(client.get("/v1/missions?status=completed", headers=auth)) == []


def test_a_summary_counts_tasks_and_defaults_the_quality_threshold(client: FlaskClient, auth: dict[str, str]) -> None:
    body = copy.deepcopy(CODE_REVIEW_PIPELINE)
    del body["qualityThreshold"]
    create(client, auth, body)
    (summary,) = client.get("/v1/missions", headers=auth).get_json()
    assert summary["qualityThreshold"] == 3.0
    assert summary["taskCount"] == 2


@pytest.mark.parametrize(
    "query",
    ["limit=abc", "limit=0", "limit=-1", "limit=100000", "offset=-1", "offset=x", "status=running"],
)
def test_a_bad_list_query_is_a_bad_request_naming_the_parameter(
    client: FlaskClient, auth: dict[str, str], query: str
) -> None:
    error = assert_error(client.get(f"/v1/missions?{query}", headers=auth), 400, "bad_request")
    assert query.split("=")[0] in error["details"]["fields"]


# --- patch ----------------------------------------------------------------------------------


def test_patch_changes_only_the_given_fields(client: FlaskClient, auth: dict[str, str]) -> None:
    mission = create(client, auth)
    before = get(client, auth, mission["id"])
    answer = client.patch(f"/v1/missions/{mission['id']}", json={"prompt": "Ship it."}, headers=auth)
    assert answer.status_code == 200, answer.get_json()
    after = get(client, auth, mission["id"])
    assert after == answer.get_json()
    assert after["prompt"] == "Ship it."
    assert {k: v for k, v in after.items() if k not in ("prompt", "updatedAt")} == {
        k: v for k, v in before.items() if k not in ("prompt", "updatedAt")
    }


def test_patch_revalidates_the_whole_mission(client: FlaskClient, auth: dict[str, str], db: psycopg.Connection) -> None:
    mission = create(client, auth)
    before = get(client, auth, mission["id"])
    team = copy.deepcopy(DEPLOY_PIPELINE["team"])
    team["agents"] = [a for a in team["agents"] if a["name"] != "deploy-agent"]

    error = assert_error(
        client.patch(f"/v1/missions/{mission['id']}", json={"team": team}, headers=auth), 400, "bad_request"
    )

    assert "tasks[1].assignTo" in error["details"]["fields"]
    assert "deploy-agent" in error["error"]
    assert get(client, auth, mission["id"]) == before


def test_patch_to_a_name_already_used_is_a_conflict(client: FlaskClient, auth: dict[str, str]) -> None:
    create(client, auth)
    other = create(client, auth, CODE_REVIEW_PIPELINE)
    answer = client.patch(f"/v1/missions/{other['id']}", json={"name": "deploy-pipeline"}, headers=auth)
    error = assert_error(answer, 409, "conflict")
    assert "name" in error["details"]["fields"]
    assert get(client, auth, other["id"])["name"] == "code-review-pipeline"


def test_patch_may_rename_a_mission(client: FlaskClient, auth: dict[str, str]) -> None:
    mission = create(client, auth)
    answer = client.patch(f"/v1/missions/{mission['id']}", json={"name": "deploy-pipeline-v2"}, headers=auth)
    assert answer.status_code == 200, answer.get_json()
    assert names(client.get("/v1/missions", headers=auth)) == ["deploy-pipeline-v2"]


def test_patch_with_null_clears_the_deadline(client: FlaskClient, auth: dict[str, str]) -> None:
    mission = create(client, auth, deadline="2099-04-01T00:00:00Z")
    assert get(client, auth, mission["id"])["deadline"] == "2099-04-01T00:00:00Z"
    answer = client.patch(f"/v1/missions/{mission['id']}", json={"deadline": None}, headers=auth)
    assert answer.status_code == 200, answer.get_json()
    assert "deadline" not in get(client, auth, mission["id"])


def test_a_deadline_with_an_offset_is_served_in_utc(client: FlaskClient, auth: dict[str, str]) -> None:
    mission = create(client, auth, deadline="2099-04-01T02:00:00+02:00")
    assert get(client, auth, mission["id"])["deadline"] == "2099-04-01T00:00:00Z"


def test_null_cannot_clear_a_required_field(client: FlaskClient, auth: dict[str, str]) -> None:
    mission = create(client, auth)
    error = assert_error(
        client.patch(f"/v1/missions/{mission['id']}", json={"name": None}, headers=auth), 400, "bad_request"
    )
    assert "name" in error["details"]["fields"]


def test_tasks_cannot_be_replaced_through_a_mission_patch(client: FlaskClient, auth: dict[str, str]) -> None:
    mission = create(client, auth)
    answer = client.patch(f"/v1/missions/{mission['id']}", json={"tasks": []}, headers=auth)
    error = assert_error(answer, 400, "bad_request")
    assert "tasks" in error["details"]["fields"]


def test_setting_a_schedule_makes_a_mission_scheduled_and_clearing_it_makes_it_a_draft_again(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    mission = create(client, auth)
    assert mission["status"] == "draft"

    scheduled = client.patch(f"/v1/missions/{mission['id']}", json={"schedule": "0 9 * * 1"}, headers=auth)
    assert scheduled.status_code == 200, scheduled.get_json()
    assert scheduled.get_json()["status"] == "scheduled"
    assert scheduled.get_json()["schedule"] == "0 9 * * 1"
    assert names(client.get("/v1/missions?status=scheduled", headers=auth)) == ["deploy-pipeline"]

    cleared = client.patch(f"/v1/missions/{mission['id']}", json={"schedule": None}, headers=auth)
    assert cleared.status_code == 200, cleared.get_json()
    assert cleared.get_json()["status"] == "draft"
    assert "schedule" not in cleared.get_json()


def test_a_mission_created_with_a_schedule_is_scheduled(client: FlaskClient, auth: dict[str, str]) -> None:
    mission = create(client, auth, schedule="2030-01-01T09:00:00Z", timezone="Europe/Rome")
    assert mission["status"] == "scheduled"
    assert mission["schedule"] == "2030-01-01T09:00:00Z"


@pytest.mark.parametrize("status", ["active", "paused"])
def test_a_running_mission_cannot_be_patched_or_deleted(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, status: str
) -> None:
    mission = create(client, auth)
    set_status(db, mission["id"], status)
    before = get(client, auth, mission["id"])

    patched = assert_error(
        client.patch(f"/v1/missions/{mission['id']}", json={"prompt": "x"}, headers=auth), 409, "conflict"
    )
    deleted = assert_error(client.delete(f"/v1/missions/{mission['id']}", headers=auth), 409, "conflict")

    assert "abort" in patched["error"] and "abort" in deleted["error"]
    assert get(client, auth, mission["id"]) == before


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_a_finished_mission_can_be_changed_and_deleted(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, status: str
) -> None:
    mission = create(client, auth)
    set_status(db, mission["id"], status)
    assert client.patch(f"/v1/missions/{mission['id']}", json={"prompt": "again"}, headers=auth).status_code == 200
    assert client.delete(f"/v1/missions/{mission['id']}", headers=auth).status_code == 204


def test_deleting_a_mission_deletes_its_tasks(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    mission = create(client, auth)
    assert client.delete(f"/v1/missions/{mission['id']}", headers=auth).status_code == 204
    assert db.execute("SELECT count(*) AS n FROM tasks").fetchone()["n"] == 0  # type: ignore[index]
    assert_error(client.delete(f"/v1/missions/{mission['id']}", headers=auth), 404, "not_found")


# --- tasks ----------------------------------------------------------------------------------


def test_the_last_task_of_a_mission_cannot_be_deleted(client: FlaskClient, auth: dict[str, str]) -> None:
    body = copy.deepcopy(DEPLOY_PIPELINE)
    body["tasks"] = body["tasks"][:1]
    del body["qualityGates"]
    mission = create(client, auth, body)
    answer = client.delete(f"/v1/missions/{mission['id']}/tasks/{mission['tasks'][0]['id']}", headers=auth)
    error = assert_error(answer, 409, "conflict")
    assert "last task" in error["error"]
    assert len(get(client, auth, mission["id"])["tasks"]) == 1


def test_a_task_another_task_depends_on_cannot_be_deleted_and_the_error_names_the_dependent(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    body = copy.deepcopy(DEPLOY_PIPELINE)
    del body["qualityGates"]  # only the dependsOn reference is left
    mission = create(client, auth, body)
    run_tests = mission["tasks"][0]["id"]

    error = assert_error(
        client.delete(f"/v1/missions/{mission['id']}/tasks/{run_tests}", headers=auth), 409, "conflict"
    )

    assert '"Run tests"' in error["error"]
    assert "Deploy to staging" in error["error"]  # who still depends on it
    # Field paths point into the mission as stored, where "Deploy to staging" is tasks[1].
    assert list(error["details"]["fields"]) == ["tasks[1].dependsOn[0]"]
    assert [t["id"] for t in get(client, auth, mission["id"])["tasks"]] == [t["id"] for t in mission["tasks"]]


def test_a_task_a_checkpoint_waits_for_cannot_be_deleted(client: FlaskClient, auth: dict[str, str]) -> None:
    body = copy.deepcopy(DEPLOY_PIPELINE)
    body["tasks"].append({"title": "Lint", "description": "l", "assignTo": "backend-dev"})
    body["checkpoints"] = [{"afterTasks": ["Lint"], "message": "Look at the lint report."}]
    mission = create(client, auth, body)
    lint = mission["tasks"][2]["id"]
    error = assert_error(client.delete(f"/v1/missions/{mission['id']}/tasks/{lint}", headers=auth), 409, "conflict")
    assert '"Lint"' in error["error"]
    assert "checkpoints[0].afterTasks[0]" in error["details"]["fields"]
    assert len(get(client, auth, mission["id"])["tasks"]) == 3


def test_a_task_nothing_refers_to_can_be_deleted(client: FlaskClient, auth: dict[str, str]) -> None:
    mission = create(client, auth)
    deploy = mission["tasks"][1]["id"]
    # The gate blocks "Deploy to staging"; drop the gate first, then the task is free to go.
    assert client.patch(f"/v1/missions/{mission['id']}", json={"qualityGates": None}, headers=auth).status_code == 200
    assert client.delete(f"/v1/missions/{mission['id']}/tasks/{deploy}", headers=auth).status_code == 204
    assert [t["title"] for t in get(client, auth, mission["id"])["tasks"]] == ["Run tests"]


def test_renaming_a_task_updates_every_reference_to_it(client: FlaskClient, auth: dict[str, str]) -> None:
    mission = create(client, auth)
    run_tests = mission["tasks"][0]["id"]

    answer = client.patch(
        f"/v1/missions/{mission['id']}/tasks/{run_tests}", json={"title": "Run unit tests"}, headers=auth
    )

    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["title"] == "Run unit tests"
    assert answer.get_json()["id"] == run_tests
    after = get(client, auth, mission["id"])
    assert [t["title"] for t in after["tasks"]] == ["Run unit tests", "Deploy to staging"]
    assert after["tasks"][1]["dependsOn"] == ["Run unit tests"]
    assert after["qualityGates"][0]["afterTasks"] == ["Run unit tests"]


def test_renaming_a_task_to_a_title_in_use_is_refused(client: FlaskClient, auth: dict[str, str]) -> None:
    mission = create(client, auth)
    before = get(client, auth, mission["id"])
    deploy = mission["tasks"][1]["id"]
    answer = client.patch(f"/v1/missions/{mission['id']}/tasks/{deploy}", json={"title": "Run tests"}, headers=auth)
    assert answer.status_code == 400, answer.get_json()
    assert get(client, auth, mission["id"]) == before


def test_a_task_patch_changes_only_the_given_fields(client: FlaskClient, auth: dict[str, str]) -> None:
    mission = create(client, auth)
    before = get(client, auth, mission["id"])
    task = mission["tasks"][0]["id"]
    answer = client.patch(f"/v1/missions/{mission['id']}/tasks/{task}", json={"maxRetries": 5}, headers=auth)
    assert answer.status_code == 200, answer.get_json()
    after = get(client, auth, mission["id"])
    assert after["tasks"][0] == {**before["tasks"][0], "maxRetries": 5}
    assert after["tasks"][1] == before["tasks"][1]


def test_an_unknown_task_is_not_found(client: FlaskClient, auth: dict[str, str]) -> None:
    mission = create(client, auth)
    path = f"/v1/missions/{mission['id']}/tasks/task_nope"
    assert_error(client.patch(path, json={"priority": 1}, headers=auth), 404, "not_found")
    assert_error(client.delete(path, headers=auth), 404, "not_found")


def test_a_task_cannot_be_added_to_an_unknown_mission(client: FlaskClient, auth: dict[str, str]) -> None:
    task = {"title": "t", "description": "d", "assignTo": "backend-dev"}
    assert_error(client.post("/v1/missions/msn_nope/tasks", json=task, headers=auth), 404, "not_found")


# --- other routes ---------------------------------------------------------------------------


def test_resumable_missions_are_an_empty_list_when_nothing_is_paused(client: FlaskClient, auth: dict[str, str]) -> None:
    create(client, auth)
    answer = client.get("/v1/missions/resumable", headers=auth)
    assert answer.status_code == 200
    assert answer.get_json() == []


def test_healthz_says_the_process_is_up(client: FlaskClient) -> None:
    answer = client.get("/healthz")
    assert answer.status_code == 200
    assert answer.get_json() == {"status": "ok"}


def test_readyz_checks_postgres_and_redis(client: FlaskClient) -> None:
    answer = client.get("/readyz")
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok"}}


@pytest.mark.parametrize("path", ["/v1/nothing-here", "/nothing-here", "/v1/missions/msn_x/unknown"])
def test_an_unknown_route_is_not_found_in_the_error_shape(client: FlaskClient, auth: dict[str, str], path: str) -> None:
    assert_error(client.get(path, headers=auth), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"), [("PUT", "/v1/missions"), ("DELETE", "/v1/missions"), ("POST", "/healthz")]
)
def test_a_wrong_method_is_refused_in_the_error_shape(
    client: FlaskClient, auth: dict[str, str], method: str, path: str
) -> None:
    answer = client.open(path, method=method, headers=auth)
    error = assert_error(answer, 405, "bad_request")
    assert error["error"]
    assert "Allow" in answer.headers


# --- execute --------------------------------------------------------------------------------


def test_the_execute_answer_is_the_run_as_its_location_serves_it(client: FlaskClient, auth: dict[str, str]) -> None:
    """The 202 is rendered from the state the request committed, not read back; it must be the
    same document ``GET Location`` serves while no worker has moved the run on."""
    created = create(client, auth, CODE_REVIEW_PIPELINE)
    answer = client.post(f"/v1/missions/{created['id']}/execute", headers=auth)
    assert answer.status_code == 202, answer.get_json()
    body = answer.get_json()
    assert answer.headers["Location"] == f"/v1/missions/{created['id']}/runs/{body['id']}"
    served = client.get(answer.headers["Location"], headers=auth)
    assert served.status_code == 200
    assert body == served.get_json()
    assert body["status"] == "active" and body["number"] == 1
    queued = [t for t in body["tasks"] if t["status"] == "queued"]
    assert len(queued) == 1  # the first of the chain; the other waits for it
    assert body["usage"] == {"tokensIn": 0, "tokensOut": 0, "costUsd": 0.0, "attempts": 1}


def test_executing_a_mission_with_a_deadline_arms_its_timer_with_the_run(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    created = create(client, auth, CODE_REVIEW_PIPELINE, deadline="2099-01-01T00:00:00Z")
    answer = client.post(f"/v1/missions/{created['id']}/execute", headers=auth)
    assert answer.status_code == 202, answer.get_json()
    timers = db.execute("SELECT kind, due_at FROM timers WHERE run_id = %s", (answer.get_json()["id"],)).fetchall()
    assert [(t["kind"], t["due_at"].isoformat()) for t in timers] == [("deadline", "2099-01-01T00:00:00+00:00")]


def test_a_run_freezes_the_project_agents_its_mission_names_into_its_team(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    veteran = {"name": "veteran", "role": "Reviews", "model": "scripted/veteran"}
    create(
        client,
        auth,
        {
            "name": "keeps its team",
            "tasks": [{"title": "T", "description": "d", "assignTo": "veteran"}],
            "team": {"name": "kept", "volatile": False, "agents": [veteran]},
        },
    )
    borrower = create(
        client,
        auth,
        {
            "name": "borrows",
            "tasks": [
                {"title": "A", "description": "d", "assignTo": "own"},
                {"title": "B", "description": "d", "assignTo": "veteran", "dependsOn": ["A"]},
            ],
            "team": {"name": "own", "volatile": True, "agents": [{"name": "own", "model": "scripted/own"}]},
        },
    )
    answer = client.post(f"/v1/missions/{borrower['id']}/execute", headers=auth)
    assert answer.status_code == 202, answer.get_json()
    spec = db.execute("SELECT spec FROM runs WHERE id = %s", (answer.get_json()["id"],)).fetchone()["spec"]
    assert [a["name"] for a in spec["team"]["agents"]] == ["own", "veteran"]
    assert spec["team"]["agents"][1]["model"] == "scripted/veteran"
    # An agent the project no longer has: the mission no longer validates, and nothing runs.
    db.execute("DELETE FROM agents WHERE name = 'veteran'")
    client.post(f"/v1/missions/{borrower['id']}/abort", headers=auth)
    refused = client.post(f"/v1/missions/{borrower['id']}/execute", headers=auth)
    error = assert_error(refused, 400, "bad_request")
    assert "veteran" in str(error["details"])
