"""Webhooks: the routes' rules (validation, the egress guard, project scope), the outbox written
with the events it reports, and the delivery of one attempt (signature, retries, give-up, resend)."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient
from standardwebhooks.webhooks import Webhook

from api.http.cursors import encode
from config import Settings
from tests.support.receiver import Receiver
from workers.coordination import tick
from workers.execution.webhooks import Deliverer
from workers.messaging.dispatch import WEBHOOK_QUEUE
from workers.support.clock import utcnow
from workers.wiring import Services

HELLO: dict[str, Any] = {
    "name": "hello",
    "prompt": "Say hello.",
    "tasks": [{"title": "Greet", "description": "Write a greeting.", "assignTo": "writer"}],
    "team": {
        "name": "crew",
        "volatile": True,
        "agents": [{"name": "writer", "role": "Writes", "model": "scripted/demo", "script": [{"delay": 30}]}],
    },
}
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Loopback receivers are allowed (only 127.0.0.1, as an operator would list it)."""
    return settings.replace(egress_allow=("127.0.0.1",), webhook_backoff_seconds=1.0, webhook_retry_hours=1.0)


def create_hook(client: FlaskClient, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    document = {"url": "http://127.0.0.1:9/hook", "events": ["mission:done"], **body}
    answer = client.post("/v1/webhooks", json=document, headers=auth)
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()  # type: ignore[no-any-return]


def error(answer: Any, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.get_json()
    body = answer.get_json()
    assert set(body) == {"error", "code", "details"}
    return body  # type: ignore[no-any-return]


def run_and_abort(client: FlaskClient, auth: dict[str, str], name: str = "hello") -> str:
    mission = client.post("/v1/missions", json={**copy.deepcopy(HELLO), "name": name}, headers=auth).get_json()
    assert client.post(f"/v1/missions/{mission['id']}/execute", headers=auth).status_code == 202
    assert client.post(f"/v1/missions/{mission['id']}/abort", headers=auth).status_code == 200
    return str(mission["id"])


def deliveries(db: psycopg.Connection, webhook_id: str | None = None) -> list[dict[str, Any]]:
    rows = db.execute(
        "SELECT * FROM webhook_deliveries WHERE %(w)s::text IS NULL OR webhook_id = %(w)s ORDER BY seq",
        {"w": webhook_id},
    ).fetchall()
    return [dict(r) for r in rows]


# --- the routes ---------------------------------------------------------------------------------


def test_a_webhook_shows_its_generated_secret_once(client: FlaskClient, auth: dict[str, str]) -> None:
    hook = create_hook(client, auth, events=["mission:done", "checkpoint:waiting"], description="ops")
    assert hook["id"].startswith("wh_") and hook["secret"].startswith("whsec_")
    Webhook(hook["secret"])  # a secret the Standard Webhooks libraries accept
    assert hook["missionIds"] is None and hook["enabled"] is True
    shown = client.get(f"/v1/webhooks/{hook['id']}", headers=auth).get_json()
    assert "secret" not in shown and shown["events"] == ["mission:done", "checkpoint:waiting"]
    listed = client.get("/v1/webhooks", headers=auth).get_json()
    assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]


def test_a_given_secret_is_kept_and_a_malformed_one_refused(client: FlaskClient, auth: dict[str, str]) -> None:
    assert create_hook(client, auth, secret=SECRET)["secret"] == SECRET
    for bad in ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_c2hvcnQ="):
        body = error(
            client.post(
                "/v1/webhooks", json={"url": "http://127.0.0.1:9/", "events": ["error"], "secret": bad}, headers=auth
            ),
            400,
        )
        assert "secret" in body["details"]["fields"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": ["mission:finished"]}, "events[0]"),
        ({"events": []}, "events"),
        ({"events": ["error", "error"]}, "events"),
        ({"url": "ftp://127.0.0.1/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"enabled": "yes"}, "enabled"),
        ({"colour": "blue"}, "colour"),
        ({"missionIds": []}, "missionIds"),
    ],
)
def test_bad_webhooks_are_refused_naming_the_field(
    client: FlaskClient, auth: dict[str, str], body: dict[str, Any], field: str
) -> None:
    document = {"url": "http://127.0.0.1:9/hook", "events": ["mission:done"], **body}
    answer = error(client.post("/v1/webhooks", json=document, headers=auth), 400)
    assert any(name == field or name.startswith(field) for name in answer["details"]["fields"]), answer
    assert client.get("/v1/webhooks", headers=auth).get_json() == []


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.7/hook",  # private
        "http://192.168.1.1/hook",
        "http://127.0.0.2:8080/hook",  # loopback, but not the one the operator allowed
        "http://169.254.169.254/latest",  # metadata
        "http://[::1]/hook",
        "http://0.0.0.0/hook",
    ],
)
def test_urls_that_reach_private_addresses_are_refused(client: FlaskClient, auth: dict[str, str], url: str) -> None:
    answer = error(client.post("/v1/webhooks", json={"url": url, "events": ["error"]}, headers=auth), 400)
    assert list(answer["details"]["fields"]) == ["url"]
    hook = create_hook(client, auth)
    answer = error(client.patch(f"/v1/webhooks/{hook['id']}", json={"url": url}, headers=auth), 400)
    assert client.get(f"/v1/webhooks/{hook['id']}", headers=auth).get_json()["url"] == hook["url"]


def test_another_projects_webhook_is_not_found(
    client: FlaskClient, auth: dict[str, str], other_key: str, db: psycopg.Connection
) -> None:
    hook = create_hook(client, auth, events=["mission:status", "mission:done"])
    run_and_abort(client, auth)
    delivery = deliveries(db)[0]["id"]
    other = {"Authorization": f"Bearer {other_key}"}
    base = f"/v1/webhooks/{hook['id']}"
    for method, path in (
        ("GET", base),
        ("PATCH", base),
        ("DELETE", base),
        ("GET", f"{base}/deliveries"),
        ("POST", f"{base}/deliveries/{delivery}/resend"),
    ):
        kwargs: dict[str, Any] = {"json": {"enabled": False}} if method == "PATCH" else {}
        error(client.open(path, method=method, headers=other, **kwargs), 404)
    assert client.get("/v1/webhooks", headers=other).get_json() == []
    assert client.get(base, headers=auth).get_json()["enabled"] is True


def test_a_mission_filter_names_only_the_projects_own_missions(
    client: FlaskClient, auth: dict[str, str], other_key: str
) -> None:
    other = {"Authorization": f"Bearer {other_key}"}
    theirs = client.post("/v1/missions", json=copy.deepcopy(HELLO), headers=other).get_json()["id"]
    answer = error(
        client.post(
            "/v1/webhooks",
            json={"url": "http://127.0.0.1:9/", "events": ["error"], "missionIds": [theirs]},
            headers=auth,
        ),
        404,
    )
    assert answer["details"]["fields"] == {"missionIds[0]": ["no such mission in this project"]}
    ours = client.post("/v1/missions", json=copy.deepcopy(HELLO), headers=auth).get_json()["id"]
    assert create_hook(client, auth, missionIds=[ours])["missionIds"] == [ours]


def test_a_project_has_at_most_max_webhooks(
    client: FlaskClient, auth: dict[str, str], other_key: str, app: Any, settings: Settings
) -> None:
    app.extensions["missions"].settings = settings.replace(max_webhooks=2)
    create_hook(client, auth)
    create_hook(client, auth)
    answer = error(
        client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/", "events": ["error"]}, headers=auth), 409
    )
    assert answer["details"] == {"max": 2}
    assert len(client.get("/v1/webhooks", headers=auth).get_json()) == 2
    create_hook(client, {"Authorization": f"Bearer {other_key}"})  # per project


def test_patch_changes_only_what_it_names_and_rotates_the_secret(client: FlaskClient, auth: dict[str, str]) -> None:
    hook = create_hook(client, auth, description="first")
    base = f"/v1/webhooks/{hook['id']}"
    changed = client.patch(base, json={"enabled": False}, headers=auth).get_json()
    assert changed["enabled"] is False and changed["description"] == "first" and "secret" not in changed
    rotated = client.patch(base, json={"rotateSecret": True}, headers=auth).get_json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != hook["secret"]
    assert client.patch(base, json={"secret": SECRET}, headers=auth).get_json()["secret"] == SECRET
    both = error(client.patch(base, json={"secret": SECRET, "rotateSecret": True}, headers=auth), 400)
    assert set(both["details"]["fields"]) == {"secret", "rotateSecret"}
    error(client.patch(base, json={"url": None}, headers=auth), 400)
    assert client.delete(base, headers=auth).status_code == 204
    error(client.get(base, headers=auth), 404)


# --- the outbox ---------------------------------------------------------------------------------


def test_events_write_their_deliveries_in_the_same_transaction(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, services: Services
) -> None:
    done = create_hook(client, auth)
    statuses = create_hook(client, auth, events=["mission:status"])
    mission_id = run_and_abort(client, auth)
    rows = deliveries(db, done["id"])
    assert [r["type"] for r in rows] == ["mission:done"]
    event = db.execute("SELECT * FROM events WHERE id = %s", (rows[0]["event_id"],)).fetchone()
    assert event is not None and event["type"] == "mission:done" and rows[0]["data"] == event["data"]
    assert rows[0]["mission_id"] == mission_id and rows[0]["status"] == "pending"
    status_events = db.execute("SELECT count(*) AS n FROM events WHERE type = 'mission:status'").fetchone()
    assert len(deliveries(db, statuses["id"])) == status_events["n"] >= 2
    # each was sent to the webhook queue after commit
    assert services.redis.llen(WEBHOOK_QUEUE) == len(deliveries(db))


def test_no_delivery_for_a_disabled_webhook_another_mission_or_another_project(
    client: FlaskClient, auth: dict[str, str], other_key: str, db: psycopg.Connection
) -> None:
    ours = client.post("/v1/missions", json={**copy.deepcopy(HELLO), "name": "watched"}, headers=auth).get_json()
    create_hook(client, auth, missionIds=[ours["id"]])
    off = create_hook(client, auth)
    client.patch(f"/v1/webhooks/{off['id']}", json={"enabled": False}, headers=auth)
    run_and_abort(client, auth, name="unwatched")
    run_and_abort(client, {"Authorization": f"Bearer {other_key}"}, name="theirs")
    assert deliveries(db) == []


# --- sending ------------------------------------------------------------------------------------


def deliver_all(services: Services, db: psycopg.Connection) -> list[str]:
    due = [r["id"] for r in deliveries(db) if r["status"] == "pending"]
    return [services.deliverer.deliver(d) for d in due]


def test_a_delivery_is_signed_and_verifies_with_the_secret(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, services: Services
) -> None:
    with Receiver().start() as receiver:
        hook = create_hook(client, auth, url=receiver.url)
        mission_id = run_and_abort(client, auth)
        assert deliver_all(services, db) == ["attempt 1: 200 -> delivered"]
        assert deliver_all(services, db) == []
    (got,) = receiver.received
    verified = Webhook(hook["secret"]).verify(got.body, got.headers)
    assert verified["type"] == "mission:done" and verified["data"]["missionId"] == mission_id
    assert got.headers["webhook-id"] == deliveries(db)[0]["id"]
    with pytest.raises(Exception, match="signature"):
        Webhook(SECRET).verify(got.body, got.headers)
    (item,) = client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=auth).get_json()
    assert item["status"] == "delivered" and item["attemptCount"] == 1 and item["nextAttemptAt"] is None
    assert item["attempts"][0]["statusCode"] == 200 and item["attempts"][0]["response"] == "answered 200"


def test_after_a_rotation_deliveries_carry_both_signatures_until_the_grace_ends(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, services: Services
) -> None:
    with Receiver().start() as receiver:
        hook = create_hook(client, auth, url=receiver.url)
        rotated = client.patch(f"/v1/webhooks/{hook['id']}", json={"rotateSecret": True}, headers=auth).get_json()
        until = datetime.fromisoformat(rotated["previousSecretExpiresAt"])
        assert timedelta(hours=23) < until - utcnow() <= timedelta(hours=24)
        assert client.get(f"/v1/webhooks/{hook['id']}", headers=auth).get_json()["previousSecretExpiresAt"]
        run_and_abort(client, auth, name="during")
        assert deliver_all(services, db) == ["attempt 1: 200 -> delivered"]

        db.execute("UPDATE webhooks SET previous_secret_until = now() - interval '1 s' WHERE id = %s", (hook["id"],))
        assert "previousSecretExpiresAt" not in client.get(f"/v1/webhooks/{hook['id']}", headers=auth).get_json()
        run_and_abort(client, auth, name="after")
        assert deliver_all(services, db) == ["attempt 1: 200 -> delivered"]
    during, after = receiver.received
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    for secret in (hook["secret"], rotated["secret"]):  # a receiver on either secret accepts it
        assert Webhook(secret).verify(during.body, during.headers)["type"] == "mission:done"
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    assert Webhook(rotated["secret"]).verify(after.body, after.headers)
    with pytest.raises(Exception, match="signature"):
        Webhook(hook["secret"]).verify(after.body, after.headers)


def test_with_no_grace_a_rotation_signs_with_the_new_secret_alone(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, services: Services
) -> None:
    services.settings = services.settings.replace(webhook_secret_grace_hours=0.0)  # (read per request)
    hook = create_hook(client, auth)
    rotated = client.patch(f"/v1/webhooks/{hook['id']}", json={"rotateSecret": True}, headers=auth).get_json()
    assert "previousSecretExpiresAt" not in rotated
    row = db.execute("SELECT previous_secret, previous_secret_until FROM webhooks WHERE id = %s", (hook["id"],))
    assert row.fetchone() == {"previous_secret": None, "previous_secret_until": None}


def test_a_failed_attempt_is_retried_after_a_backoff_then_given_up(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, services: Services, settings: Settings
) -> None:
    with Receiver(500, 503).start() as receiver:
        hook = create_hook(client, auth, url=receiver.url)
        run_and_abort(client, auth)
        (delivery,) = deliveries(db)
        assert services.deliverer.deliver(delivery["id"]) == "attempt 1: 500 -> pending"
        assert services.deliverer.deliver(delivery["id"]) == "not due"  # its backoff has not passed
        row = deliveries(db)[0]
        wait = (row["next_attempt_at"] - utcnow()).total_seconds()
        assert 0.3 < wait <= 1.0  # 50-100% of the 1 s base
        db.execute("UPDATE webhook_deliveries SET next_attempt_at = now()")
        assert services.deliverer.deliver(delivery["id"]) == "attempt 2: 503 -> pending"
        # an hour later (the retry window of these settings) the next failure gives up
        db.execute("UPDATE webhook_deliveries SET next_attempt_at = now(), created_at = now() - interval '1 hour'")
        receiver.statuses = [502]
        assert services.deliverer.deliver(delivery["id"]) == "attempt 3: 502 -> failed"
    (item,) = client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=auth).get_json()
    attempts = item["attempts"]
    assert [a["statusCode"] for a in attempts] == [500, 503, 502]
    assert attempts[0]["response"] == "answered 500" and item["status"] == "failed"


def test_the_url_is_checked_again_when_sent(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, settings: Settings, services: Services
) -> None:
    hook = create_hook(client, auth, url="http://127.0.0.1:9/hook")
    db.execute("UPDATE webhooks SET url = 'http://hooks.internal.test/x' WHERE id = %s", (hook["id"],))
    run_and_abort(client, auth)
    rebound = Deliverer(settings, services.db, resolve=lambda *_: [(2, 1, 6, "", ("10.1.2.3", 80))])
    (delivery,) = deliveries(db)
    assert (
        rebound.deliver(delivery["id"])
        == "attempt 1: hooks.internal.test resolves to a private address (10.1.2.3) -> pending"
    )


def test_a_closed_port_is_an_error_not_a_crash(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, services: Services
) -> None:
    closed = Receiver()  # never started
    create_hook(client, auth, url=closed.url)
    run_and_abort(client, auth)
    (outcome,) = deliver_all(services, db)
    assert outcome.startswith("attempt 1: ") and outcome.endswith("-> pending")
    (row,) = db.execute("SELECT error, status_code FROM webhook_attempts").fetchall()
    assert row["status_code"] is None and "refused" in row["error"].lower()


def test_resend_makes_a_delivery_due_again_and_a_disabled_webhook_stops(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, services: Services
) -> None:
    with Receiver().start() as receiver:
        hook = create_hook(client, auth, url=receiver.url)
        run_and_abort(client, auth)
        deliver_all(services, db)
        (delivery,) = deliveries(db)
        services.redis.delete(WEBHOOK_QUEUE)
        base = f"/v1/webhooks/{hook['id']}"
        answer = client.post(f"{base}/deliveries/{delivery['id']}/resend", headers=auth)
        assert answer.status_code == 202 and answer.get_json()["status"] == "pending"
        assert len(answer.get_json()["attempts"]) == 1
        assert services.redis.llen(WEBHOOK_QUEUE) == 1
        assert services.deliverer.deliver(delivery["id"]) == "attempt 2: 200 -> delivered"
        assert [r.headers["webhook-id"] for r in receiver.received] == [delivery["id"]] * 2
        error(client.post(f"{base}/deliveries/msg_nope/resend", headers=auth), 404)
        client.patch(base, json={"enabled": False}, headers=auth)
        error(client.post(f"{base}/deliveries/{delivery['id']}/resend", headers=auth), 409)
        db.execute("UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now()")
        assert services.deliverer.deliver(delivery["id"]) == "not due"  # disabled: nothing is sent
    assert len(receiver.received) == 2


def test_deliveries_are_paged_by_keyset(client: FlaskClient, auth: dict[str, str], db: psycopg.Connection) -> None:
    hook = create_hook(client, auth, events=["mission:status", "task:status", "mission:done"])
    run_and_abort(client, auth)
    every = [r["id"] for r in reversed(deliveries(db))]
    assert len(every) >= 5
    base = f"/v1/webhooks/{hook['id']}/deliveries"
    seen: list[str] = []
    url = f"{base}?limit=2"
    for _ in range(len(every)):
        answer = client.get(url, headers=auth)
        assert answer.status_code == 200, answer.get_json()
        page = answer.get_json()
        assert len(page) <= 2
        seen += [d["id"] for d in page]
        cursor = answer.headers.get("X-Next-Cursor")
        if cursor is None:
            assert "Link" not in answer.headers and len(page) < 2
            break
        assert len(page) == 2 and answer.headers["Link"] == f'<{base}?limit=2&after={cursor}>; rel="next"'
        url = f"{base}?limit=2&after={cursor}"
    assert seen == every  # each delivery once, newest first
    for after in ("abc", "2", encode(["x"]), encode([2**63]), encode([1, 2]), "W" * 401):
        body = error(client.get(f"{base}?after={after}", headers=auth), 400)
        assert list(body["details"]["fields"]) == ["after"]
    error(client.get(f"{base}?limit=0", headers=auth), 400)


def test_the_tick_sends_due_deliveries_whose_message_was_lost(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, services: Services, settings: Settings
) -> None:
    create_hook(client, auth)
    run_and_abort(client, auth)
    services.redis.delete(WEBHOOK_QUEUE)  # the message after commit was lost
    now = utcnow()
    assert tick.send_due_deliveries(services.coordinator, services.dispatcher, settings, now) == 0  # not yet
    later = now + timedelta(seconds=settings.requeue_seconds + 1)
    assert tick.send_due_deliveries(services.coordinator, services.dispatcher, settings, later) == 1
    assert tick.send_due_deliveries(services.coordinator, services.dispatcher, settings, later) == 0  # once
    (raw,) = services.redis.lrange(WEBHOOK_QUEUE, 0, -1)
    assert json.loads(raw)["headers"]["task"] == "missions.deliver_webhook"


def test_metrics_count_deliveries_by_status_and_show_overdue_ones(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = client.get("/metrics").get_data(as_text=True)
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    assert scrape()[("missions_webhook_deliveries", (("status", "pending"),))] == 0
    create_hook(client, auth, events=["mission:status", "mission:done"])
    run_and_abort(client, auth)
    pending = len(deliveries(db))
    db.execute("UPDATE webhook_deliveries SET next_attempt_at = now() - interval '90 seconds'")
    db.execute("UPDATE webhook_deliveries SET status = 'failed' WHERE type = 'mission:done'")
    samples = scrape()
    assert samples[("missions_webhook_deliveries", (("status", "pending"),))] == pending - 1
    assert samples[("missions_webhook_deliveries", (("status", "failed"),))] == 1
    assert samples[("missions_webhook_overdue_seconds", ())] >= 90
