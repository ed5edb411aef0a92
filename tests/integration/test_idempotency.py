"""Idempotency-Key on POST, PATCH and DELETE (Stripe's semantics): a repeat gets the first answer
and does nothing again; another request with the key, or a repeat while the first is in progress,
is a 409; a crashed request's claim frees itself; keys are per project and expire."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from typing import Any

import psycopg
from flask.testing import FlaskClient

from tests.fixtures.examples import DEPLOY_PIPELINE
from tests.integration.test_missions_api import assert_error, create
from workers.coordination.tick import delete_expired_idempotency_keys
from workers.support.clock import utcnow
from workers.wiring import Services


def keyed(auth: dict[str, str], key: str, **more: str) -> dict[str, str]:
    return {**auth, "Idempotency-Key": key, **more}


def mission(name: str = "idem") -> dict[str, Any]:
    document = copy.deepcopy(DEPLOY_PIPELINE)
    document["name"] = name
    return document


def count(db: psycopg.Connection, table: str) -> int:
    return int(db.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"])


def test_a_repeated_create_returns_the_first_answer_and_creates_nothing(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    first = client.post("/v1/missions", json=mission(), headers=keyed(auth, "k-1"))
    assert first.status_code == 201, first.get_json()
    assert "Idempotent-Replayed" not in first.headers
    again = client.post("/v1/missions", json=mission(), headers=keyed(auth, "k-1"))
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Content-Type"] == "application/json"
    assert count(db, "missions") == 1
    # Without the key, the same body is a new request (here: the name is taken).
    assert_error(client.post("/v1/missions", json=mission(), headers=auth), 409, "conflict")


def test_the_same_key_with_another_body_is_a_conflict(client: FlaskClient, auth: dict[str, str]) -> None:
    assert client.post("/v1/missions", json=mission("a"), headers=keyed(auth, "k")).status_code == 201
    error = assert_error(client.post("/v1/missions", json=mission("b"), headers=keyed(auth, "k")), 409, "conflict")
    assert error["details"] == {"idempotencyKey": "k", "reason": "different_request"}
    assert "another request" in error["error"]
    # ... or another path or method.
    assert_error(client.post("/v1/keys", headers=keyed(auth, "k")), 409, "conflict")


def test_a_repeat_while_the_first_is_in_progress_is_a_conflict_until_its_lease_ends(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, services: Services
) -> None:
    body = json.dumps(mission()).encode()
    # The first request claimed the key and is still running (its claim holds a lease).
    with client.application.test_request_context(
        "/v1/missions", method="POST", data=body, content_type="application/json"
    ):
        from api.http.idempotency import request_hash

        digest = request_hash()
    project_id = db.execute("SELECT id FROM projects").fetchone()["id"]
    db.execute(
        "INSERT INTO idempotency_keys (project_id, key, request_hash, locked_until, expires_at)"
        " VALUES (%s, 'busy', %s, now() + interval '1 minute', now() + interval '1 day')",
        (project_id, digest),
    )
    busy = client.post("/v1/missions", data=body, content_type="application/json", headers=keyed(auth, "busy"))
    error = assert_error(busy, 409, "conflict")
    assert error["details"]["reason"] == "in_progress" and busy.headers["Retry-After"] == "1"
    assert count(db, "missions") == 0
    # Its process died: once the lease ran out, the repeat runs.
    db.execute("UPDATE idempotency_keys SET locked_until = now() - interval '1 second'")
    done = client.post("/v1/missions", data=body, content_type="application/json", headers=keyed(auth, "busy"))
    assert done.status_code == 201, done.get_json()
    assert count(db, "missions") == 1
    row = db.execute("SELECT status, locked_until FROM idempotency_keys").fetchone()
    assert row["status"] == 201 and row["locked_until"] is None


def test_a_client_error_is_stored_and_replayed(client: FlaskClient, auth: dict[str, str]) -> None:
    bad = {**mission(), "qualityThreshold": 9}
    first = client.post("/v1/missions", json=bad, headers=keyed(auth, "bad"))
    assert_error(first, 400, "bad_request")
    again = client.post("/v1/missions", json=bad, headers=keyed(auth, "bad"))
    assert again.status_code == 400 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()


def test_keys_are_per_project(
    client: FlaskClient, auth: dict[str, str], other_key: str, db: psycopg.Connection
) -> None:
    theirs = {"Authorization": f"Bearer {other_key}"}
    assert client.post("/v1/missions", json=mission(), headers=keyed(auth, "shared")).status_code == 201
    answer = client.post("/v1/missions", json=mission(), headers=keyed(theirs, "shared"))
    assert answer.status_code == 201 and "Idempotent-Replayed" not in answer.headers
    assert count(db, "missions") == 2


def test_a_repeated_execute_starts_no_second_run(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    created = create(client, auth)
    path = f"/v1/missions/{created['id']}/execute"
    first = client.post(path, headers=keyed(auth, "run-once"))
    assert first.status_code == 202, first.get_json()
    client.post(f"/v1/missions/{created['id']}/abort", headers=auth)  # (the run is over: a new one could start)
    again = client.post(path, headers=keyed(auth, "run-once"))
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["id"] == first.get_json()["id"]
    assert count(db, "runs") == 1


def test_a_streamed_execute_stores_its_run_and_a_repeat_streams_the_same_run(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    created = create(client, auth)
    path = f"/v1/missions/{created['id']}/execute"
    streamed = client.post(path, headers=keyed(auth, "s", Accept="text/event-stream"), buffered=False)
    assert streamed.status_code == 200 and streamed.mimetype == "text/event-stream"
    streamed.close()
    (run_id,) = [r["id"] for r in db.execute("SELECT id FROM runs").fetchall()]
    as_json = client.post(path, headers=keyed(auth, "s"))
    assert as_json.status_code == 202 and as_json.headers["Idempotent-Replayed"] == "true"
    assert as_json.get_json()["id"] == run_id
    assert as_json.headers["Location"].endswith(run_id)
    again = client.post(path, headers=keyed(auth, "s", Accept="text/event-stream"), buffered=False)
    assert again.status_code == 200 and again.mimetype == "text/event-stream"
    assert again.headers["Idempotent-Replayed"] == "true"
    text = ""
    for chunk, _ in zip(again.response, range(20), strict=False):  # (the run goes on: read its first events)
        text += chunk.decode() if isinstance(chunk, bytes) else chunk
        if f'"runId": "{run_id}"' in text:
            break
    again.close()
    assert f'"runId": "{run_id}"' in text
    assert count(db, "runs") == 1


def test_patch_and_delete_are_replayed_too(client: FlaskClient, auth: dict[str, str], db: psycopg.Connection) -> None:
    created = create(client, auth)
    path = f"/v1/missions/{created['id']}"
    patched = client.patch(path, json={"prompt": "p"}, headers=keyed(auth, "p"))
    assert patched.status_code == 200
    assert client.patch(path, json={"prompt": "p"}, headers=keyed(auth, "p")).headers["Idempotent-Replayed"] == "true"
    assert client.delete(path, headers=keyed(auth, "d")).status_code == 204
    again = client.delete(path, headers=keyed(auth, "d"))
    assert again.status_code == 204 and again.headers["Idempotent-Replayed"] == "true"  # not a 404
    assert count(db, "missions") == 0


def test_a_get_ignores_the_header(client: FlaskClient, auth: dict[str, str], db: psycopg.Connection) -> None:
    assert client.get("/v1/missions", headers=keyed(auth, "g")).status_code == 200
    assert count(db, "idempotency_keys") == 0


def test_a_malformed_key_is_refused_and_nothing_runs(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    for key in ("", "x" * 256, "has space", "caf\u00e9"):
        answer = client.post("/v1/missions", json=mission(), headers=keyed(auth, key))
        error = assert_error(answer, 400, "bad_request")
        assert list(error["details"]["fields"]) == ["Idempotency-Key"], key
    assert count(db, "missions") == 0


def test_expired_keys_are_cleaned_up_and_may_be_used_again(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, services: Services
) -> None:
    assert client.post("/v1/missions", json=mission("one"), headers=keyed(auth, "old")).status_code == 201
    db.execute("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
    # An expired key is a new key: the request runs again.
    answer = client.post("/v1/missions", json=mission("two"), headers=keyed(auth, "old"))
    assert answer.status_code == 201 and "Idempotent-Replayed" not in answer.headers
    db.execute("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
    assert client.post("/v1/missions", json=mission("three"), headers=keyed(auth, "live")).status_code == 201
    assert delete_expired_idempotency_keys(services.coordinator, utcnow() + timedelta(seconds=1)) == 1
    assert [r["key"] for r in db.execute("SELECT key FROM idempotency_keys").fetchall()] == ["live"]


def test_the_stored_answer_keeps_for_the_configured_time(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    assert client.post("/v1/missions", json=mission(), headers=keyed(auth, "ttl")).status_code == 201
    row = db.execute("SELECT expires_at - created_at AS kept FROM idempotency_keys").fetchone()
    assert row["kept"] == timedelta(hours=24)
