"""Scheduled missions against real Postgres: next fire, firing from the tick, races, overlaps."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from flask.testing import FlaskClient

from tests.support import shell
from workers.coordination import schedules
from workers.store.missions import Limits
from workers.wiring import Services

LIMITS = Limits()


def weekly_report(**extra: Any) -> dict[str, Any]:
    return {
        "name": "weekly-report",
        "prompt": "Write the weekly report.",
        "schedule": "0 9 * * MON",
        "timezone": "Europe/Rome",
        "tasks": [{"title": "Write", "description": "Write it", "assignTo": "w"}],
        "team": {"name": "t", "volatile": True, "agents": [{"name": "w", "model": "scripted/w"}]},
        **extra,
    }


def test_a_scheduled_mission_shows_its_next_run_in_utc(client: FlaskClient, auth: dict[str, str]) -> None:
    created = client.post("/v1/missions", json=weekly_report(), headers=auth)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["status"] == "scheduled"
    next_run = datetime.fromisoformat(body["nextRunAt"])
    rome = next_run.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Rome"))
    assert (rome.weekday(), rome.hour, rome.minute) == (0, 9, 0)
    assert next_run > datetime.now(UTC)


def test_clearing_the_schedule_makes_the_mission_a_draft_again(client: FlaskClient, auth: dict[str, str]) -> None:
    mission = client.post("/v1/missions", json=weekly_report(), headers=auth).get_json()
    patched = client.patch(f"/v1/missions/{mission['id']}", json={"schedule": None}, headers=auth)
    assert patched.status_code == 200, patched.get_json()
    assert patched.get_json()["status"] == "draft" and "nextRunAt" not in patched.get_json()
    again = client.patch(
        f"/v1/missions/{mission['id']}", json={"schedule": "*/5 * * * *", "timezone": "UTC"}, headers=auth
    ).get_json()
    assert again["status"] == "scheduled" and again["nextRunAt"].endswith(("0:00Z", "5:00Z"))


def test_a_one_shot_schedule_in_the_past_is_rejected(client: FlaskClient, auth: dict[str, str], db) -> None:
    answer = client.post("/v1/missions", json=weekly_report(schedule="2020-01-01T00:00:00Z"), headers=auth)
    assert answer.status_code == 400 and "in the past" in answer.get_json()["error"]
    assert db.execute("SELECT count(*) AS n FROM missions").fetchone()["n"] == 0


def test_an_end_date_before_any_fire_is_rejected(client: FlaskClient, auth: dict[str, str]) -> None:
    answer = client.post("/v1/missions", json=weekly_report(endDate="2020-01-01T00:00:00Z"), headers=auth)
    assert answer.status_code == 400 and answer.get_json()["details"]["fields"]["endDate"]


def _make_due(db: psycopg.Connection, mission_id: str, at: datetime) -> None:
    db.execute("UPDATE missions SET next_run_at = %s WHERE id = %s", (at, mission_id))


def test_two_ticks_racing_start_exactly_one_run_per_fire(
    client: FlaskClient, auth: dict[str, str], services: Services, database_url: str, db
) -> None:
    mission = client.post("/v1/missions", json=weekly_report(), headers=auth).get_json()
    fire_at = datetime(2026, 11, 23, 8, tzinfo=UTC)
    now = fire_at + timedelta(seconds=1)
    _make_due(db, mission["id"], fire_at)
    started: list[int] = []
    barrier = threading.Barrier(2)

    def one_tick() -> None:
        coordinator = shell.quiet_coordinator(services)
        barrier.wait()
        started.append(schedules.fire_due(coordinator, LIMITS, now))

    threads = [threading.Thread(target=one_tick) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(started) == [0, 1]
    runs = db.execute("SELECT count(*) AS n FROM runs WHERE mission_id = %s", (mission["id"],)).fetchone()
    fires = db.execute(
        "SELECT fire_at, status, run_id FROM schedule_fires WHERE mission_id = %s", (mission["id"],)
    ).fetchall()
    row = db.execute("SELECT execution_count, next_run_at FROM missions WHERE id = %s", (mission["id"],)).fetchone()
    assert runs["n"] == 1 and row["execution_count"] == 1
    assert [(f["fire_at"], f["status"]) for f in fires] == [(fire_at, "started")] and fires[0]["run_id"]
    assert row["next_run_at"] == datetime(2026, 11, 30, 8, tzinfo=UTC)
    # A repeated tick for the same fire (after a crash, say) finds nothing to do.
    _make_due(db, mission["id"], fire_at)
    assert schedules.fire_due(shell.quiet_coordinator(services), LIMITS, now) == 0
    assert db.execute("SELECT count(*) AS n FROM runs").fetchone()["n"] == 1


def test_a_fire_while_a_run_is_active_is_skipped_and_recorded(
    client: FlaskClient, auth: dict[str, str], services: Services, db
) -> None:
    mission = client.post("/v1/missions", json=weekly_report(), headers=auth).get_json()
    first = datetime(2026, 11, 23, 8, tzinfo=UTC)
    _make_due(db, mission["id"], first)
    assert schedules.fire_due(shell.quiet_coordinator(services), LIMITS, first + timedelta(seconds=2)) == 1
    second = datetime(2026, 11, 30, 8, tzinfo=UTC)
    assert schedules.fire_due(shell.quiet_coordinator(services), LIMITS, second + timedelta(seconds=2)) == 0
    fires = client.get(f"/v1/missions/{mission['id']}/fires", headers=auth).get_json()
    assert [(f["fireAt"], f["status"], f.get("reason")) for f in fires] == [
        ("2026-11-30T08:00:00Z", "skipped", "overlap"),
        ("2026-11-23T08:00:00Z", "started", None),
    ]
    assert (
        db.execute("SELECT execution_count FROM missions WHERE id = %s", (mission["id"],)).fetchone()["execution_count"]
        == 1
    )


def test_missed_fires_after_downtime_are_skipped_or_caught_up_once(
    client: FlaskClient, auth: dict[str, str], services: Services, db
) -> None:
    skip = client.post("/v1/missions", json=weekly_report(name="skipper"), headers=auth).get_json()
    catch = client.post("/v1/missions", json=weekly_report(name="catcher", catchUp="latest"), headers=auth).get_json()
    down_since = datetime(2026, 11, 2, 8, tzinfo=UTC)
    for mission in (skip, catch):
        _make_due(db, mission["id"], down_since)
    now = datetime(2026, 11, 24, 12, tzinfo=UTC)  # four Monday fires were missed
    assert schedules.fire_due(shell.quiet_coordinator(services), LIMITS, now) == 1
    statuses = {
        m["name"]: [
            (f["status"], f.get("reason")) for f in client.get(f"/v1/missions/{m['id']}/fires", headers=auth).get_json()
        ]
        for m in (skip, catch)
    }
    assert statuses["skipper"] == [("skipped", "missed")] * 4
    assert statuses["catcher"] == [("started", None)] + [("skipped", "caught_up")] * 3


def test_a_scheduled_mission_returns_to_scheduled_after_its_run(
    client: FlaskClient, auth: dict[str, str], services: Services, db
) -> None:
    mission = client.post("/v1/missions", json=weekly_report(), headers=auth).get_json()
    fire_at = datetime(2026, 11, 23, 8, tzinfo=UTC)
    _make_due(db, mission["id"], fire_at)
    schedules.fire_due(shell.quiet_coordinator(services), LIMITS, fire_at + timedelta(seconds=1))
    executor = shell.executor(services, "w")
    task_id = mission["tasks"][0]["id"]
    run_id = db.execute("SELECT id FROM runs WHERE mission_id = %s", (mission["id"],)).fetchone()["id"]
    assert executor.run_attempt(run_id, task_id, 1) == "finished"
    detail = client.get(f"/v1/missions/{mission['id']}", headers=auth).get_json()
    assert detail["status"] == "scheduled" and detail["lastRunStatus"] == "completed"
    assert detail["executionCount"] == 1 and detail["tasks"][0]["status"] == "completed"
    history = client.get(f"/v1/missions/{mission['id']}/runs", headers=auth).get_json()
    assert [r["status"] for r in history] == ["completed"]
