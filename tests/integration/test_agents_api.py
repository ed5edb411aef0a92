"""/v1/agents: the project's reusable agents; a mission's non-volatile team may not redefine one
differently; an agent missions need cannot be deleted; a run keeps the configuration it started with."""

from __future__ import annotations

from typing import Any

import psycopg
from flask.testing import FlaskClient

from tests.integration.test_missions_api import assert_error, create

WRITER = {"name": "writer", "role": "Writes", "model": "scripted/writer"}


def kept_team_mission(name: str, agent: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "tasks": [{"title": "T", "description": "d", "assignTo": agent["name"]}],
        "team": {"name": "kept", "volatile": False, "agents": [agent]},
    }


def borrowing_mission(name: str, agent: str = "writer") -> dict[str, Any]:
    """Names the project's agent without defining it."""
    return {"name": name, "tasks": [{"title": "T", "description": "d", "assignTo": agent}]}


def test_put_creates_then_replaces_an_agent_and_get_lists_it(client: FlaskClient, auth: dict[str, str]) -> None:
    created = client.put("/v1/agents/writer", json={"role": "Writes", "model": "scripted/a"}, headers=auth)
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["name"] == "writer" and created.get_json()["model"] == "scripted/a"
    replaced = client.put("/v1/agents/writer", json={"name": "writer", "model": "scripted/b"}, headers=auth)
    assert replaced.status_code == 200
    body = client.get("/v1/agents/writer", headers=auth).get_json()
    assert body["model"] == "scripted/b" and "role" not in body and body["updatedAt"]
    assert [a["name"] for a in client.get("/v1/agents", headers=auth).get_json()] == ["writer"]


def test_put_validates_the_agent_like_a_team_agent(client: FlaskClient, auth: dict[str, str]) -> None:
    answer = client.put(
        "/v1/agents/writer", json={"model": "nope", "tools": ["shell"], "baseUrl": "http://x"}, headers=auth
    )
    error = assert_error(answer, 400, "bad_request")
    assert set(error["details"]["fields"]) == {"model", "tools[0]", "baseUrl"}
    error = assert_error(client.put("/v1/agents/writer", json={"role": "r"}, headers=auth), 400, "bad_request")
    assert "model" in error["details"]["fields"]
    renamed = client.put("/v1/agents/writer", json={"name": "other", "model": "scripted/x"}, headers=auth)
    assert "name" in assert_error(renamed, 400, "bad_request")["details"]["fields"]
    assert client.get("/v1/agents", headers=auth).get_json() == []


def test_a_kept_team_may_not_redefine_a_project_agent_differently(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    create(client, auth, kept_team_mission("first", WRITER))
    same = client.post("/v1/missions", json=kept_team_mission("same", dict(WRITER)), headers=auth)
    assert same.status_code == 201, same.get_json()
    differing = {**WRITER, "model": "scripted/other", "systemPrompt": "Be terse."}
    refused = client.post("/v1/missions", json=kept_team_mission("differs", differing), headers=auth)
    error = assert_error(refused, 409, "conflict")
    assert "'writer'" in error["error"]
    assert error["details"]["agents"] == {"writer": ["model", "systemPrompt"]}
    assert set(error["details"]["fields"]) == {"team.agents[0].model", "team.agents[0].systemPrompt"}
    assert db.execute("SELECT count(*) AS n FROM missions").fetchone()["n"] == 2
    assert db.execute("SELECT document->>'model' AS m FROM agents").fetchone()["m"] == "scripted/writer"
    # A volatile team may use its own version.
    volatile = kept_team_mission("volatile", differing)
    volatile["team"]["volatile"] = True
    assert client.post("/v1/missions", json=volatile, headers=auth).status_code == 201


def test_patching_a_kept_team_is_checked_but_other_changes_are_not(client: FlaskClient, auth: dict[str, str]) -> None:
    mission = create(client, auth, kept_team_mission("m", WRITER))
    client.put("/v1/agents/writer", json={"model": "scripted/changed"}, headers=auth)
    # The mission's own team still says scripted/writer: changing its prompt is fine...
    assert client.patch(f"/v1/missions/{mission['id']}", json={"prompt": "p"}, headers=auth).status_code == 200
    # ... setting that team again is refused, setting the agreed one is accepted.
    team = {"name": "kept", "volatile": False, "agents": [WRITER]}
    assert_error(client.patch(f"/v1/missions/{mission['id']}", json={"team": team}, headers=auth), 409, "conflict")
    team["agents"] = [{"name": "writer", "model": "scripted/changed"}]
    assert client.patch(f"/v1/missions/{mission['id']}", json={"team": team}, headers=auth).status_code == 200


def test_an_agent_missions_need_cannot_be_deleted(client: FlaskClient, auth: dict[str, str]) -> None:
    client.put("/v1/agents/writer", json={"model": "scripted/a"}, headers=auth)
    needing = create(client, auth, borrowing_mission("needs it"))
    create(client, auth, kept_team_mission("has its own", {"name": "writer", "model": "scripted/a"}))
    error = assert_error(client.delete("/v1/agents/writer", headers=auth), 409, "conflict")
    assert error["details"]["missions"] == [{"id": needing["id"], "name": "needs it"}]
    assert "needs it" in error["error"] and "has its own" not in error["error"]
    assert client.delete(f"/v1/missions/{needing['id']}", headers=auth).status_code == 204
    assert client.delete("/v1/agents/writer", headers=auth).status_code == 204
    assert_error(client.get("/v1/agents/writer", headers=auth), 404, "not_found")
    assert_error(client.delete("/v1/agents/writer", headers=auth), 404, "not_found")


def test_a_fallback_agent_counts_as_needing_it(client: FlaskClient, auth: dict[str, str]) -> None:
    client.put("/v1/agents/backup", json={"model": "scripted/b"}, headers=auth)
    mission = {
        "name": "falls back",
        "tasks": [{"title": "T", "description": "d", "assignTo": "own", "retryPolicy": {"fallbackAgent": "backup"}}],
        "team": {"name": "t", "volatile": True, "agents": [{"name": "own", "model": "scripted/o"}]},
    }
    create(client, auth, mission)
    assert_error(client.delete("/v1/agents/backup", headers=auth), 409, "conflict")


def test_another_projects_agents_are_not_found(client: FlaskClient, auth: dict[str, str], other_key: str) -> None:
    theirs = {"Authorization": f"Bearer {other_key}"}
    client.put("/v1/agents/secret", json={"model": "scripted/s"}, headers=theirs)
    assert_error(client.get("/v1/agents/secret", headers=auth), 404, "not_found")
    assert_error(client.delete("/v1/agents/secret", headers=auth), 404, "not_found")
    assert client.get("/v1/agents", headers=auth).get_json() == []
    # Putting one of the same name makes our own.
    assert client.put("/v1/agents/secret", json={"model": "scripted/mine"}, headers=auth).status_code == 201
    assert client.get("/v1/agents/secret", headers=theirs).get_json()["model"] == "scripted/s"


def test_a_run_keeps_the_agent_it_started_with(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    client.put("/v1/agents/writer", json={"model": "scripted/first"}, headers=auth)
    mission = create(client, auth, borrowing_mission("borrows"))
    run = client.post(f"/v1/missions/{mission['id']}/execute", headers=auth).get_json()
    assert client.put("/v1/agents/writer", json={"model": "scripted/second"}, headers=auth).status_code == 200
    spec = db.execute("SELECT spec FROM runs WHERE id = %s", (run["id"],)).fetchone()["spec"]
    assert spec["team"]["agents"] == [{"name": "writer", "model": "scripted/first"}]
    client.post(f"/v1/missions/{mission['id']}/abort", headers=auth)
    second = client.post(f"/v1/missions/{mission['id']}/execute", headers=auth).get_json()
    spec = db.execute("SELECT spec FROM runs WHERE id = %s", (second["id"],)).fetchone()["spec"]
    assert spec["team"]["agents"][0]["model"] == "scripted/second"
