"""Keyset paging of the list routes: following X-Next-Cursor visits every item once, in the list's
order, as offset paging does; a bad cursor is a 400 naming ``after``; cursors never reach another
project's missions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from tests.fixtures.examples import DEPLOY_PIPELINE


def minimal_mission(name: str) -> dict[str, Any]:
    return {**DEPLOY_PIPELINE, "name": name}


def follow(client: FlaskClient, url: str, headers: dict[str, str]) -> tuple[list[Any], int]:
    """Every item of a list, page by page through X-Next-Cursor; and how many pages it took."""
    items: list[Any] = []
    pages = 0
    while url:
        answer = client.get(url, headers=headers)
        assert answer.status_code == 200, answer.get_json()
        items += answer.get_json()
        pages += 1
        cursor = answer.headers.get("X-Next-Cursor")
        if cursor is None:
            assert "Link" not in answer.headers
            break
        link = answer.headers["Link"]
        assert link.endswith('>; rel="next"') and f"after={cursor}" in link
        url = link[1 : link.index(">")]
    return items, pages


@pytest.fixture
def mission(client: FlaskClient, auth: dict[str, str]) -> dict[str, Any]:
    answer = client.post("/v1/missions", json=minimal_mission("paged"), headers=auth)
    assert answer.status_code == 201, answer.get_json()
    return dict(answer.get_json())


@pytest.fixture
def history(db: psycopg.Connection, mission: dict[str, Any]) -> Callable[[int], None]:
    """``n`` finished runs of the mission, and a schedule fire for each."""

    def add(n: int) -> None:
        start = datetime(2026, 11, 1, tzinfo=UTC)
        for number in range(1, n + 1):
            run_id = f"run_paged_{number:03d}"
            db.execute(
                "INSERT INTO runs (id, mission_id, number, status, spec, state, finished_at) "
                "VALUES (%s, %s, %s, 'completed', '{}', '{}', now())",
                (run_id, mission["id"], number),
            )
            db.execute(
                "INSERT INTO schedule_fires (mission_id, fire_at, status, run_id) VALUES (%s, %s, 'started', %s)",
                (mission["id"], start + timedelta(minutes=number), run_id),
            )
        db.execute("UPDATE missions SET latest_run_id = %s WHERE id = %s", (f"run_paged_{n:03d}", mission["id"]))

    return add


@pytest.mark.parametrize("kind", ["runs", "fires"])
def test_following_the_cursor_visits_every_run_and_fire_once_newest_first(
    client: FlaskClient, auth: dict[str, str], mission: dict[str, Any], history: Callable[[int], None], kind: str
) -> None:
    history(11)
    base = f"/v1/missions/{mission['id']}/{kind}"
    whole = client.get(f"{base}?limit=100", headers=auth).get_json()

    paged, pages = follow(client, f"{base}?limit=4", auth)

    assert len(whole) == 11 and paged == whole and pages == 3
    if kind == "runs":
        assert [run["number"] for run in paged] == list(range(11, 0, -1))


def test_a_page_that_ends_the_list_exactly_has_a_cursor_to_an_empty_page(
    client: FlaskClient, auth: dict[str, str], mission: dict[str, Any], history: Callable[[int], None]
) -> None:
    history(4)
    paged, pages = follow(client, f"/v1/missions/{mission['id']}/runs?limit=2", auth)
    assert len(paged) == 4 and pages == 3  # the third page is empty: a full page cannot know it is the last


def test_the_cursor_and_offset_agree_from_any_offset_page(
    client: FlaskClient, auth: dict[str, str], mission: dict[str, Any], history: Callable[[int], None]
) -> None:
    history(9)
    base = f"/v1/missions/{mission['id']}/runs"
    first = client.get(f"{base}?limit=3&offset=2", headers=auth)
    after = client.get(f"{base}?limit=3&after={first.headers['X-Next-Cursor']}", headers=auth).get_json()
    assert after == client.get(f"{base}?limit=3&offset=5", headers=auth).get_json()


@pytest.mark.parametrize("status", [None, "draft"])
def test_following_the_cursor_visits_every_mission_once_in_the_list_order(
    client: FlaskClient, auth: dict[str, str], status: str | None
) -> None:
    for n in range(7):
        assert client.post("/v1/missions", json=minimal_mission(f"m{n}"), headers=auth).status_code == 201
    query = f"&status={status}" if status else ""
    whole = client.get(f"/v1/missions?limit=100{query}", headers=auth).get_json()

    paged, pages = follow(client, f"/v1/missions?limit=3{query}", auth)

    assert len(whole) == 7 and paged == whole and pages == 3


@pytest.mark.parametrize(
    "after",
    ["%%%", "bm90IGpzb24", "WzFd", "WyJ4Il0", "WzEuNV0", "W3RydWVd", "Wy0xXQ", "WzEsMl0", "e30", "a" * 401],
)
def test_a_cursor_that_is_not_one_is_a_bad_request_naming_after(
    client: FlaskClient, auth: dict[str, str], mission: dict[str, Any], after: str
) -> None:
    # (base64 of: not json, [1] for a time, ["x"] for a number, [1.5], [true], [-1], [1,2], {}, too long)
    url = f"/v1/missions/{mission['id']}/fires?after={after}" if after == "WzFd" else None
    url = url or f"/v1/missions/{mission['id']}/runs?after={after}"
    answer = client.get(url, headers=auth)
    assert answer.status_code == 400, answer.get_json()
    assert list(answer.get_json()["details"]["fields"]) == ["after"]


def test_a_missions_cursor_without_a_time_zone_is_a_bad_request(client: FlaskClient, auth: dict[str, str]) -> None:
    from api.http.cursors import encode

    answer = client.get(f"/v1/missions?after={encode(['2026-11-01T00:00:00', 'msn_x'])}", headers=auth)
    assert answer.status_code == 400 and list(answer.get_json()["details"]["fields"]) == ["after"]


def test_offset_and_after_together_are_a_bad_request(
    client: FlaskClient, auth: dict[str, str], mission: dict[str, Any], history: Callable[[int], None]
) -> None:
    history(3)
    base = f"/v1/missions/{mission['id']}/runs"
    cursor = client.get(f"{base}?limit=1", headers=auth).headers["X-Next-Cursor"]
    answer = client.get(f"{base}?limit=1&offset=1&after={cursor}", headers=auth)
    assert answer.status_code == 400
    assert set(answer.get_json()["details"]["fields"]) == {"offset", "after"}


def test_a_cursor_does_not_reach_another_projects_missions(
    client: FlaskClient,
    auth: dict[str, str],
    other_key: str,
    mission: dict[str, Any],
    history: Callable[[int], None],
) -> None:
    history(3)
    other = {"Authorization": f"Bearer {other_key}"}
    for kind in ("runs", "fires"):
        url = f"/v1/missions/{mission['id']}/{kind}"
        cursor = client.get(f"{url}?limit=1", headers=auth).headers["X-Next-Cursor"]
        assert client.get(f"{url}?after={cursor}", headers=auth).status_code == 200
        assert client.get(f"{url}?after={cursor}", headers=other).status_code == 404
    mine = client.get("/v1/missions?limit=1", headers=auth).headers["X-Next-Cursor"]
    assert client.get("/v1/missions", headers=other).get_json() == []
    assert client.get(f"/v1/missions?after={mine}", headers=other).get_json() == []


def add_events(db: psycopg.Connection, mission_id: str, run_id: str, n: int) -> list[int]:
    rows = db.execute(
        "INSERT INTO events (run_id, mission_id, type, data) "
        "SELECT %s, %s, 'task:output', jsonb_build_object('missionId', %s::text, 'runId', %s::text, 'n', k) "
        "FROM generate_series(1, %s) AS k RETURNING id",
        (run_id, mission_id, mission_id, run_id, n),
    ).fetchall()
    return [row["id"] for row in rows]


JSON = {"Accept": "application/json"}


def test_the_events_of_a_run_page_as_json_through_the_cursor(
    client: FlaskClient,
    auth: dict[str, str],
    db: psycopg.Connection,
    mission: dict[str, Any],
    history: Callable[[int], None],
) -> None:
    history(2)
    ids = add_events(db, mission["id"], "run_paged_001", 7)
    add_events(db, mission["id"], "run_paged_002", 3)  # another run's events never appear
    url = f"/v1/missions/{mission['id']}/events?runId=run_paged_001&limit=3"

    paged, pages = follow(client, url, {**auth, **JSON})

    assert [event["id"] for event in paged] == ids and pages == 3
    assert paged[0]["type"] == "task:output" and paged[0]["data"]["n"] == 1 and paged[0]["createdAt"]
    latest = client.get(f"/v1/missions/{mission['id']}/events?limit=100", headers={**auth, **JSON})
    assert [event["data"]["n"] for event in latest.get_json()] == [1, 2, 3]  # the latest run by default


def test_the_json_page_of_events_starts_after_last_event_id(
    client: FlaskClient,
    auth: dict[str, str],
    db: psycopg.Connection,
    mission: dict[str, Any],
    history: Callable[[int], None],
) -> None:
    history(1)
    ids = add_events(db, mission["id"], "run_paged_001", 5)
    url = f"/v1/missions/{mission['id']}/events"
    by_header = client.get(url, headers={**auth, **JSON, "Last-Event-ID": str(ids[1])}).get_json()
    by_query = client.get(f"{url}?lastEventId={ids[1]}", headers={**auth, **JSON}).get_json()
    assert [e["id"] for e in by_header] == [e["id"] for e in by_query] == ids[2:]
    cursor = client.get(f"{url}?limit=1", headers={**auth, **JSON}).headers["X-Next-Cursor"]
    both = client.get(f"{url}?after={cursor}", headers={**auth, **JSON, "Last-Event-ID": str(ids[1])})
    assert both.status_code == 400 and set(both.get_json()["details"]["fields"]) == {"lastEventId", "after"}


def test_without_an_explicit_json_accept_the_events_route_still_streams(
    client: FlaskClient,
    auth: dict[str, str],
    db: psycopg.Connection,
    mission: dict[str, Any],
    history: Callable[[int], None],
) -> None:
    history(1)
    add_events(db, mission["id"], "run_paged_001", 1)
    db.execute(
        "INSERT INTO events (run_id, mission_id, type, data) VALUES ('run_paged_001', %s, 'mission:done', '{}')",
        (mission["id"],),
    )
    for accept in ("*/*", "text/event-stream", "text/event-stream, application/json;q=0.5", None):
        headers = {**auth, **({"Accept": accept} if accept else {})}
        answer = client.get(f"/v1/missions/{mission['id']}/events", headers=headers)
        assert answer.mimetype == "text/event-stream", accept
        assert "event:mission:done" in answer.get_data(as_text=True).replace(": ", ":")


def test_usage_is_the_missions_over_all_runs_and_each_listed_runs_own(
    client: FlaskClient,
    auth: dict[str, str],
    db: psycopg.Connection,
    mission: dict[str, Any],
    history: Callable[[int], None],
) -> None:
    history(3)
    task_id = db.execute("SELECT id FROM tasks WHERE mission_id = %s ORDER BY position LIMIT 1", (mission["id"],))
    task = task_id.fetchone()["id"]
    for number in (1, 2, 3):
        db.execute(
            "INSERT INTO attempts (run_id, task_id, attempt, status, tokens_in, cost_usd) "
            "SELECT %s, %s, k, 'completed', %s, 0.5 FROM generate_series(1, %s) AS k",
            (f"run_paged_{number:03d}", task, 10 * number, number),
        )

    detail = client.get(f"/v1/missions/{mission['id']}", headers=auth).get_json()
    runs = client.get(f"/v1/missions/{mission['id']}/runs?limit=2", headers=auth).get_json()
    one = client.get(f"/v1/missions/{mission['id']}/runs/run_paged_001", headers=auth).get_json()

    assert detail["usage"]["attempts"] == 6 and detail["usage"]["tokensIn"] == 10 + 40 + 90
    assert [(r["number"], r["usage"]["attempts"], r["usage"]["tokensIn"]) for r in runs] == [(3, 3, 90), (2, 2, 40)]
    assert (one["usage"]["attempts"], one["usage"]["tokensIn"]) == (1, 10)
