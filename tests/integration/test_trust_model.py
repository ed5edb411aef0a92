"""What an API-key holder may make a worker do (docs/security.md), checked where a mission comes in:
provider endpoints and key variables are the operator's, and every number is bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.http.app import create_app
from config import Settings
from config.profiles import ProviderProfile
from workers.wiring import Services

PROFILES = (
    ProviderProfile("local", "openai", "http://127.0.0.1:9/v1"),
    ProviderProfile("team-a", "anthropic", None, "TEAM_A_KEY"),
)


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url, redis_url=redis_url, data_dir=tmp_path / "data", provider_profiles=PROFILES
    )


@pytest.fixture
def app(settings: Settings, services: Services) -> Flask:
    return create_app(settings, services)


def mission(agent: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    agent = {"name": "a", "role": "r", "model": "openai/gpt-4o", **(agent or {})}
    return {
        "name": "m",
        "tasks": [{"title": "T", "description": "d", "assignTo": "a"}],
        "team": {"name": "t", "volatile": True, "agents": [agent]},
        **fields,
    }


def rejected(client: FlaskClient, auth: dict[str, str], document: dict[str, Any]) -> dict[str, list[str]]:
    answer = client.post("/v1/missions", json=document, headers=auth)
    assert answer.status_code == 400, answer.get_json()
    body = answer.get_json()
    assert body["code"] == "bad_request"
    fields: dict[str, list[str]] = body["details"]["fields"]
    return fields


@pytest.mark.parametrize(
    ("agent", "field"),
    [
        ({"baseUrl": "http://169.254.169.254/latest"}, "team.agents[0].baseUrl"),
        ({"apiKeyEnv": "DATABASE_URL"}, "team.agents[0].apiKeyEnv"),
    ],
)
def test_a_mission_naming_its_own_endpoint_or_key_variable_is_rejected_at_create(
    client: FlaskClient, auth: dict[str, str], agent: dict[str, Any], field: str
) -> None:
    fields = rejected(client, auth, mission(agent))
    assert list(fields) == [field]
    assert "chosen by the server's operator" in fields[field][0] and '"local"' in fields[field][0]
    assert client.get("/v1/missions", headers=auth).get_json() == []


def test_an_assessor_naming_its_own_endpoint_is_rejected_too(client: FlaskClient, auth: dict[str, str]) -> None:
    fields = rejected(client, auth, mission(assessor={"model": "openai/judge", "baseUrl": "http://10.0.0.5/v1"}))
    assert list(fields) == ["assessor.baseUrl"]


def test_a_profile_must_be_the_operators_and_for_the_models_provider(client: FlaskClient, auth: dict[str, str]) -> None:
    fields = rejected(client, auth, mission({"profile": "elsewhere"}))
    assert fields == {
        "team.agents[0].profile": ['unknown provider profile "elsewhere" (this server\'s profiles: "local", "team-a")']
    }
    fields = rejected(client, auth, mission({"profile": "team-a"}))
    assert fields == {"team.agents[0].profile": ['profile "team-a" is for anthropic models, not for "openai/gpt-4o"']}


def test_a_mission_naming_an_operator_profile_is_accepted(client: FlaskClient, auth: dict[str, str]) -> None:
    document = mission({"profile": "local"}, assessor={"model": "anthropic/judge", "profile": "team-a"})
    answer = client.post("/v1/missions", json=document, headers=auth)
    assert answer.status_code == 201, answer.get_json()


@pytest.mark.parametrize(
    ("patch", "field", "message"),
    [
        ({"timeout": 1e12}, "tasks[0].timeout", "timeout must be at most 2592000 seconds, got 1e+12"),
        ({"retryPolicy": {"backoff": 1e300}}, "tasks[0].retryPolicy.backoff", "less than or equal to 86400"),
        ({"priority": 10**30}, "tasks[0].priority", "less than or equal to 1000000"),
        ({"expectations": [{"criterion": "good", "weight": 1e308}]}, "tasks[0].expectations[0].weight", "at most"),
    ],
)
def test_a_task_number_beyond_its_bound_is_rejected_and_named(
    client: FlaskClient, auth: dict[str, str], patch: dict[str, Any], field: str, message: str
) -> None:
    document = mission()
    document["tasks"][0].update(patch)
    fields = rejected(client, auth, document)
    assert field in fields and message in fields[field][0]


@pytest.mark.parametrize(
    ("fields_", "field"),
    [
        ({"maxConcurrency": 10**12}, "maxConcurrency"),
        ({"budget": {"maxCostUsd": 1e300}}, "budget.maxCostUsd"),
        ({"budget": {"maxTokens": 10**20}}, "budget.maxTokens"),
    ],
)
def test_a_mission_number_beyond_its_bound_is_rejected_and_named(
    client: FlaskClient, auth: dict[str, str], fields_: dict[str, Any], field: str
) -> None:
    assert field in rejected(client, auth, mission(**fields_))


def test_an_agent_concurrency_or_script_delay_beyond_its_bound_is_rejected(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    fields = rejected(client, auth, mission({"model": "scripted/x", "maxConcurrency": 10**9}))
    assert fields == {"team.agents[0].maxConcurrency": ["maxConcurrency must be at most 100000, got 1000000000"]}
    assert "team.agents[0].script[0].delay" in rejected(client, auth, mission({"script": [{"delay": 1e9}]}))


def test_the_longest_timeout_allowed_runs_without_overflow(
    client: FlaskClient, auth: dict[str, str], services: Services
) -> None:
    from orchestrator.validation import MAX_TASK_TIMEOUT
    from tests.support import shell

    document = mission({"model": "scripted/x"})
    document["tasks"][0]["timeout"] = MAX_TASK_TIMEOUT
    created = client.post("/v1/missions", json=document, headers=auth).get_json()
    run = client.post(f"/v1/missions/{created['id']}/execute", headers=auth).get_json()
    task_id = created["tasks"][0]["id"]
    assert shell.executor(services).run_attempt(run["id"], task_id, 1) == "finished"
    assert client.get(f"/v1/missions/{created['id']}", headers=auth).get_json()["status"] == "completed"
