"""Per-run inputs: `POST /execute` with `data` merged over the mission's for that run only, shown on
the run and in its prompts; a schedule's `scheduleData` for the runs it starts; the CLI's `--data`."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import psycopg
import pytest
from flask.testing import FlaskClient

from api.cli.client_commands import read_run_data
from tests.support import shell
from workers.coordination import schedules
from workers.store.missions import Limits
from workers.wiring import Services

MISSION: dict[str, Any] = {
    "name": "report",
    "prompt": "Write the report.",
    "data": {"team": "core", "window": {"days": 7}, "format": "md"},
    "tasks": [{"title": "Write", "description": "Write it.", "assignTo": "w"}],
    "team": {
        "name": "t",
        "volatile": True,
        "agents": [{"name": "w", "model": "scripted/w", "script": [{"delay": 30}]}],
    },
}


def create(client: FlaskClient, auth: dict[str, str], **changes: Any) -> dict[str, Any]:
    answer = client.post("/v1/missions", json={**copy.deepcopy(MISSION), **changes}, headers=auth)
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()  # type: ignore[no-any-return]


def prompt_data(db: psycopg.Connection, run_id: str) -> Any:
    """The mission data the first attempt's prompt carries."""
    row = db.execute("SELECT prompt FROM attempts WHERE run_id = %s AND attempt = 1", (run_id,)).fetchone()
    assert row is not None
    section = row["prompt"].split("# Mission data\n", 1)[1].split("\n\n# ", 1)[0]
    return json.loads(section)


def finish(client: FlaskClient, auth: dict[str, str], mission_id: str) -> None:
    assert client.post(f"/v1/missions/{mission_id}/abort", headers=auth).status_code == 200


def test_run_data_is_merged_over_the_missions_at_the_top_level_for_that_run_only(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    mission = create(client, auth)
    given = {"window": {"hours": 12}, "audience": "board"}
    answer = client.post(f"/v1/missions/{mission['id']}/execute", json={"data": given}, headers=auth)
    assert answer.status_code == 202, answer.get_json()
    run = answer.get_json()
    assert run["data"] == given
    shown = client.get(f"/v1/missions/{mission['id']}/runs/{run['id']}", headers=auth).get_json()
    assert shown["data"] == given
    assert prompt_data(db, run["id"]) == {"team": "core", "window": {"hours": 12}, "format": "md", "audience": "board"}
    finish(client, auth, mission["id"])
    # the mission keeps its own data; the next run without data sees only it
    assert client.get(f"/v1/missions/{mission['id']}", headers=auth).get_json()["data"] == MISSION["data"]
    again = client.post(f"/v1/missions/{mission['id']}/execute", headers=auth).get_json()
    assert "data" not in again and prompt_data(db, again["id"]) == MISSION["data"]
    listed = client.get(f"/v1/missions/{mission['id']}/runs", headers=auth).get_json()
    assert [r.get("data") for r in listed] == [None, given]


def test_a_mission_without_data_takes_the_runs_as_is(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    mission = create(client, auth, data=None)
    run = client.post(f"/v1/missions/{mission['id']}/execute", json={"data": {"x": [1, 2]}}, headers=auth).get_json()
    assert prompt_data(db, run["id"]) == {"x": [1, 2]}


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"data": [1, 2]}, 400, "data"),
        ({"data": "text"}, 400, "data"),
        ({"dat": {}}, 400, "dat"),
        ({"data": {"bad": "\u0000"}}, 400, "data.bad"),
    ],
)
def test_bad_run_data_is_refused_and_starts_nothing(
    client: FlaskClient, auth: dict[str, str], body: dict[str, Any], status: int, field: str
) -> None:
    mission = create(client, auth)
    answer = client.post(f"/v1/missions/{mission['id']}/execute", json=body, headers=auth)
    assert answer.status_code == status, answer.get_json()
    assert field in answer.get_json()["details"]["fields"], answer.get_json()
    assert client.get(f"/v1/missions/{mission['id']}", headers=auth).get_json()["executionCount"] == 0


def test_run_data_needs_a_mission_whose_data_is_an_object(client: FlaskClient, auth: dict[str, str]) -> None:
    mission = create(client, auth, data=["a", "b"])
    answer = client.post(f"/v1/missions/{mission['id']}/execute", json={"data": {"x": 1}}, headers=auth)
    assert answer.status_code == 400
    assert answer.get_json()["details"]["fields"]["data"] == [
        "the mission's data is an array, not an object: per-run data merges into an object only"
    ]
    assert client.get(f"/v1/missions/{mission['id']}", headers=auth).get_json()["executionCount"] == 0
    plain = client.post(f"/v1/missions/{mission['id']}/execute", headers=auth)  # without data it runs
    assert plain.status_code == 202


def test_an_execute_body_must_be_json(client: FlaskClient, auth: dict[str, str]) -> None:
    mission = create(client, auth)
    answer = client.post(
        f"/v1/missions/{mission['id']}/execute", data="data=1", headers={**auth, "Content-Type": "text/plain"}
    )
    assert answer.status_code == 415


def test_a_schedule_starts_its_runs_with_its_data(
    client: FlaskClient, auth: dict[str, str], services: Services, db: psycopg.Connection
) -> None:
    mission = create(client, auth, schedule="0 9 * * MON", scheduleData={"format": "pdf"})
    assert client.get(f"/v1/missions/{mission['id']}", headers=auth).get_json()["scheduleData"] == {"format": "pdf"}
    fire_at = datetime(2026, 11, 23, 9, tzinfo=UTC)
    db.execute("UPDATE missions SET next_run_at = %s WHERE id = %s", (fire_at, mission["id"]))
    assert schedules.fire_due(shell.quiet_coordinator(services), Limits(), fire_at + timedelta(seconds=1)) == 1
    (run,) = client.get(f"/v1/missions/{mission['id']}/runs", headers=auth).get_json()
    assert run["data"] == {"format": "pdf"}
    assert prompt_data(db, run["id"]) == {**MISSION["data"], "format": "pdf"}


def test_schedule_data_needs_mission_data_it_can_merge_into(client: FlaskClient, auth: dict[str, str]) -> None:
    answer = client.post(
        "/v1/missions",
        json={**copy.deepcopy(MISSION), "data": 7, "schedule": "0 9 * * MON", "scheduleData": {"x": 1}},
        headers=auth,
    )
    assert answer.status_code == 400 and "scheduleData" in answer.get_json()["details"]["fields"]
    mission = create(client, auth, schedule="0 9 * * MON", scheduleData={"x": 1})
    patched = client.patch(f"/v1/missions/{mission['id']}", json={"data": "text"}, headers=auth)
    assert patched.status_code == 400 and "scheduleData" in patched.get_json()["details"]["fields"]
    bad = client.patch(f"/v1/missions/{mission['id']}", json={"scheduleData": [1]}, headers=auth)
    assert bad.status_code == 400 and "scheduleData" in bad.get_json()["details"]["fields"]


def test_the_cli_reads_run_data_inline_or_from_a_file(tmp_path: Path) -> None:
    assert read_run_data('{"a": 1}') == {"a": 1}
    path = tmp_path / "data.json"
    path.write_text('{"b": [2]}', encoding="utf-8")
    assert read_run_data(f"@{path}") == {"b": [2]}
    for bad in ("[1]", "{nope", f"@{tmp_path / 'missing.json'}"):
        with pytest.raises(click.BadParameter):
            read_run_data(bad)
