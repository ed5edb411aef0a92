"""Rate limits per API key across API processes (flask-limiter on Redis), the project's own limit,
Redis being down, and the cap on open event streams per key."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.http.app import create_app
from config import Settings
from tests.fixtures.examples import DEPLOY_PIPELINE
from tests.integration.test_missions_api import assert_error, create
from tests.support.stack import free_port
from workers.store.projects import set_rate_limit
from workers.wiring import Services

RATE, BURST = 5, 10  # a window of 2 s


@pytest.fixture
def limited(settings: Settings) -> Iterator[tuple[Settings, Services]]:
    limited_settings = settings.replace(rate_limit=RATE, rate_limit_burst=BURST, max_streams_per_key=2)
    services = Services(limited_settings)
    yield limited_settings, services
    services.close()


@pytest.fixture
def app(limited: tuple[Settings, Services]) -> Flask:
    return create_app(*limited)


def headers_of(answer: object) -> tuple[int, int, int]:
    h = answer.headers  # type: ignore[attr-defined]
    return int(h["X-RateLimit-Limit"]), int(h["X-RateLimit-Remaining"]), int(h["X-RateLimit-Reset"])


def test_every_response_carries_the_keys_rate_limit(client: FlaskClient, auth: dict[str, str]) -> None:
    remaining = []
    for path in ("/v1/missions", "/v1/keys", "/v1/missions/msn_nope"):
        answer = client.get(path, headers=auth)
        limit, left, reset = headers_of(answer)
        assert limit == BURST and time.time() <= reset <= time.time() + 3
        remaining.append(left)
    assert remaining == [BURST - 1, BURST - 2, BURST - 3]  # one count per key, whatever the route (or a 404)
    assert "Retry-After" not in client.get("/v1/missions", headers=auth).headers


def test_past_the_burst_a_request_is_limited_and_does_nothing(
    client: FlaskClient, auth: dict[str, str], other_key: str, db: psycopg.Connection
) -> None:
    for _ in range(BURST):
        assert client.get("/v1/missions", headers=auth).status_code == 200
    document = copy.deepcopy(DEPLOY_PIPELINE)
    limited = client.post("/v1/missions", json=document, headers=auth)
    error = assert_error(limited, 429, "rate_limited")
    assert error["details"] == {"limit": BURST, "windowSeconds": 2, "ratePerSecond": RATE}
    assert 1 <= int(limited.headers["Retry-After"]) <= 2
    assert headers_of(limited)[:2] == (BURST, 0)
    assert db.execute("SELECT count(*) AS n FROM missions").fetchone()["n"] == 0
    # Another key (here of another project) has its own count.
    theirs = client.get("/v1/missions", headers={"Authorization": f"Bearer {other_key}"})
    assert theirs.status_code == 200 and headers_of(theirs)[1] == BURST - 1
    # The window moves on: after Retry-After there is room again.
    time.sleep(int(limited.headers["Retry-After"]) + 0.1)
    assert client.get("/v1/missions", headers=auth).status_code == 200


def test_the_count_is_shared_by_every_api_process(
    limited: tuple[Settings, Services], client: FlaskClient, auth: dict[str, str]
) -> None:
    settings, _ = limited
    second_services = Services(settings)
    try:
        second = create_app(settings, second_services).test_client()
        for n in range(BURST):
            assert (client if n % 2 else second).get("/v1/missions", headers=auth).status_code == 200
        assert_error(second.get("/v1/missions", headers=auth), 429, "rate_limited")
        assert_error(client.get("/v1/missions", headers=auth), 429, "rate_limited")
    finally:
        second_services.close()


def test_a_project_may_have_its_own_limit(client: FlaskClient, auth: dict[str, str], db: psycopg.Connection) -> None:
    assert headers_of(client.get("/v1/missions", headers=auth))[0] == BURST
    set_rate_limit(db, "acme", 50, 100)
    assert headers_of(client.get("/v1/missions", headers=auth))[0] == 100
    set_rate_limit(db, "acme", None, None)
    assert headers_of(client.get("/v1/missions", headers=auth))[0] == BURST


def test_the_cli_sets_and_shows_a_projects_limit(database_url: str, client: FlaskClient, auth: dict[str, str]) -> None:
    from tests.integration.test_cli import missions

    shown = missions("project", "limits", "--project", "acme", DATABASE_URL=database_url)
    assert shown.returncode == 0, shown.stderr
    assert "10 requests/s per key, bursts of 20 (the server's)" in shown.stdout
    changed = missions(
        "project", "limits", "--project", "acme", "--rate", "3", "--burst", "9", DATABASE_URL=database_url
    )
    assert changed.returncode == 0, changed.stderr
    assert "3 requests/s per key, bursts of 9 (the project's own)" in changed.stdout
    limit, _, reset = headers_of(client.get("/v1/missions", headers=auth))
    assert limit == 9 and reset <= time.time() + 4  # 9 in a window of 3 s
    back = missions("project", "limits", "--project", "acme", "--default", DATABASE_URL=database_url)
    assert back.returncode == 0 and "(the server's)" in back.stdout
    unknown = missions("project", "limits", "--project", "nobody", DATABASE_URL=database_url)
    assert unknown.returncode != 0 and "not found" in unknown.stderr


def test_redis_down_limits_each_process_on_its_own_and_fails_no_request(
    limited: tuple[Settings, Services], auth: dict[str, str]
) -> None:
    settings, _ = limited
    unreachable = settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/5")
    services = Services(unreachable)
    try:
        client = create_app(unreachable, services).test_client()
        answers = [client.get("/v1/missions", headers=auth) for _ in range(BURST + 1)]
        assert [a.status_code for a in answers] == [200] * BURST + [429]
        assert headers_of(answers[0])[:2] == (BURST, BURST - 1)
    finally:
        services.close()


def _run(client: FlaskClient, auth: dict[str, str]) -> str:
    created = create(client, auth)
    assert client.post(f"/v1/missions/{created['id']}/execute", headers=auth).status_code == 202
    return str(created["id"])


def test_open_event_streams_per_key_are_capped(
    client: FlaskClient, auth: dict[str, str], other_key: str, db: psycopg.Connection
) -> None:
    mission_id = _run(client, auth)
    path = f"/v1/missions/{mission_id}/events"
    streams = [client.get(path, headers=auth, buffered=False) for _ in range(2)]
    assert [s.status_code for s in streams] == [200, 200]
    refused = client.get(path, headers=auth, buffered=False)
    error = assert_error(refused, 429, "rate_limited")
    assert error["details"] == {"openStreams": 2, "limit": 2} and refused.headers["Retry-After"] == "5"
    # A streamed execute is refused before it starts a run.
    other = create(client, auth, name="second")
    refused = client.post(f"/v1/missions/{other['id']}/execute", headers={**auth, "Accept": "text/event-stream"})
    assert_error(refused, 429, "rate_limited")
    assert db.execute("SELECT count(*) AS n FROM runs").fetchone()["n"] == 1
    # Another key has its own streams; closing one stream gives its slot back.
    theirs = {"Authorization": f"Bearer {other_key}"}
    assert client.get("/v1/missions", headers=theirs).status_code == 200
    streams[0].close()
    again = client.get(path, headers=auth, buffered=False)
    assert again.status_code == 200
    for stream in (again, streams[1]):
        stream.close()


def test_a_stream_whose_process_died_frees_its_slot_after_the_ttl(
    limited: tuple[Settings, Services], client: FlaskClient, auth: dict[str, str]
) -> None:
    _, services = limited
    mission_id = _run(client, auth)
    path = f"/v1/missions/{mission_id}/events"
    held = [client.get(path, headers=auth, buffered=False) for _ in range(2)]
    assert_error(client.get(path, headers=auth, buffered=False), 429, "rate_limited")
    # Nobody vouches for them any more (as when their process is killed): they age past the ttl.
    key_id = client.get("/v1/keys", headers=auth).get_json()[0]["id"]
    redis = services.limits_redis
    members = redis.zrange(f"missions:streams:{key_id}", 0, -1)
    redis.zadd(f"missions:streams:{key_id}", {m: time.time() - services.stream_slots.ttl - 1 for m in members})
    fresh = client.get(path, headers=auth, buffered=False)
    assert fresh.status_code == 200
    for stream in (*held, fresh):
        stream.close()


def test_retry_after_is_never_shorter_than_the_wait_for_room(client: FlaskClient, auth: dict[str, str]) -> None:
    """The burst starts just before a whole second and the limited request comes just after it:
    where a truncated Retry-After (1 s for a 1.9 s wait) would send the client back too early."""
    while not 0.90 <= time.time() % 1 < 0.93:
        time.sleep(0.005)
    first_done = 0.0
    for _ in range(BURST):
        assert client.get("/v1/missions", headers=auth).status_code == 200
        first_done = first_done or time.time()
    while time.time() % 1 >= 0.5:  # (past the whole second)
        time.sleep(0.005)
    sent = time.time()
    limited = client.get("/v1/missions", headers=auth)
    assert limited.status_code == 429
    # The first request's entry leaves the 2 s window no later than first_done + 2.
    assert sent + int(limited.headers["Retry-After"]) >= first_done + 2
