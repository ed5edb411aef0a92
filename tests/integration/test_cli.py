"""The real ``missions`` console script, run as a user would run it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
from flask.testing import FlaskClient

from config import SETTINGS_TABLE


def missions_executable() -> str:
    beside_python = Path(sys.executable).parent / "missions"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("missions")
    assert found, "the missions console script is not installed (pip install -e .)"
    return found


def environment(**env: str) -> dict[str, str]:
    """This process's environment without any Missions setting, plus ``env``."""
    settings = {setting.variable for setting in SETTINGS_TABLE}
    return {**{k: v for k, v in os.environ.items() if k not in settings}, **env}


def missions(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``missions ARGS`` with a clean Missions environment plus ``env``."""
    return subprocess.run(
        [missions_executable(), *args],
        env=environment(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_db_upgrade_reports_an_up_to_date_database(database_url: str) -> None:
    result = missions("db", "upgrade", DATABASE_URL=database_url)
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_db_upgrade_twice_changes_nothing_the_second_time(database_url: str, db: psycopg.Connection) -> None:
    before = db.execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY version").fetchall()
    for _ in range(2):
        result = missions("db", "upgrade", DATABASE_URL=database_url)
        assert result.returncode == 0, result.stderr
    assert db.execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY version").fetchall() == before


def test_keys_create_prints_a_working_key_as_the_last_line(database_url: str, client: FlaskClient) -> None:
    result = missions("keys", "create", "--project", "acme", DATABASE_URL=database_url)
    assert result.returncode == 0, result.stderr

    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("sk_live_")
    assert " " not in key

    answer = client.get("/v1/missions", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == []


def test_keys_of_the_same_project_see_the_same_missions(database_url: str, client: FlaskClient) -> None:
    first, second = (
        missions("keys", "create", "--project", "acme", DATABASE_URL=database_url).stdout.splitlines()[-1]
        for _ in range(2)
    )
    assert first != second
    body = {
        "name": "shared",
        "tasks": [{"title": "t", "description": "d", "assignTo": "a"}],
        "team": {"agents": [{"name": "a", "model": "scripted/echo"}]},
    }
    created = client.post("/v1/missions", json=body, headers={"Authorization": f"Bearer {first}"})
    assert created.status_code == 201, created.get_json()
    listed = client.get("/v1/missions", headers={"Authorization": f"Bearer {second}"}).get_json()
    assert [m["id"] for m in listed] == [created.get_json()["id"]]


def test_keys_create_needs_a_project_name(database_url: str) -> None:
    result = missions("keys", "create", "--project", " ", DATABASE_URL=database_url)
    assert result.returncode != 0
    assert "--project" in result.stderr


def test_a_malformed_setting_stops_the_command_and_names_the_variable(database_url: str) -> None:
    result = missions("db", "upgrade", DATABASE_URL=database_url, MISSIONS_PORT="abc")
    assert result.returncode != 0
    assert "MISSIONS_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_database_url_that_is_not_postgres_is_refused_by_name() -> None:
    result = missions("db", "upgrade", DATABASE_URL="mysql://localhost/missions")
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr
