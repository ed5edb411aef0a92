"""/v1/keys and `missions keys ...`: keys are listed without secrets, a new secret is shown once,
a revoked key is refused by the next request, another project's key is a 404."""

from __future__ import annotations

import hashlib

import psycopg
from flask.testing import FlaskClient

from tests.integration.test_cli import missions
from tests.integration.test_missions_api import assert_error


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_a_created_key_is_shown_once_listed_without_its_secret_and_works(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    created = client.post("/v1/keys", json={"name": "ci"}, headers=auth)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["key"].startswith("sk_live_") and body["key"].startswith(body["prefix"])
    assert body["name"] == "ci" and body["revoked"] is False and body["revokedAt"] is None
    assert created.headers["Location"] == f"/v1/keys/{body['id']}"
    listed = client.get("/v1/keys", headers=auth).get_json()
    assert [k["id"] for k in listed][-1] == body["id"]
    assert all("key" not in k for k in listed)
    assert set(listed[-1]) == {"id", "prefix", "name", "createdAt", "lastUsedAt", "revoked", "revokedAt"}
    # Only the digest is stored.
    row = db.execute("SELECT * FROM api_keys WHERE id = %s", (body["id"],)).fetchone()
    assert bytes(row["key_hash"]) == hashlib.sha256(body["key"].encode()).digest()
    assert body["key"] not in repr(row)
    assert client.get("/v1/missions", headers=bearer(body["key"])).status_code == 200


def test_a_key_without_a_body_gets_no_name(client: FlaskClient, auth: dict[str, str]) -> None:
    created = client.post("/v1/keys", headers=auth)
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["name"] is None


def test_an_unknown_field_or_a_long_name_is_refused(client: FlaskClient, auth: dict[str, str]) -> None:
    error = assert_error(client.post("/v1/keys", json={"secret": "x"}, headers=auth), 400, "bad_request")
    assert "secret" in error["details"]["fields"]
    error = assert_error(client.post("/v1/keys", json={"name": "n" * 201}, headers=auth), 400, "bad_request")
    assert "name" in error["details"]["fields"]


def test_a_revoked_key_is_refused_by_the_very_next_request(client: FlaskClient, auth: dict[str, str]) -> None:
    other = client.post("/v1/keys", headers=auth).get_json()
    assert client.get("/v1/missions", headers=bearer(other["key"])).status_code == 200
    revoked = client.delete(f"/v1/keys/{other['id']}", headers=auth)
    assert revoked.status_code == 200, revoked.get_json()
    assert revoked.get_json()["revoked"] is True and revoked.get_json()["revokedAt"]
    assert_error(client.get("/v1/missions", headers=bearer(other["key"])), 401, "unauthorized")
    # Revoking again changes nothing; the key stays listed as revoked.
    again = client.delete(f"/v1/keys/{other['id']}", headers=auth).get_json()
    assert again["revokedAt"] == revoked.get_json()["revokedAt"]
    assert next(k for k in client.get("/v1/keys", headers=auth).get_json() if k["id"] == other["id"])["revoked"]


def test_a_key_may_revoke_itself(client: FlaskClient, auth: dict[str, str]) -> None:
    mine = client.get("/v1/keys", headers=auth).get_json()[0]
    assert client.delete(f"/v1/keys/{mine['id']}", headers=auth).status_code == 200
    assert_error(client.get("/v1/keys", headers=auth), 401, "unauthorized")


def test_another_projects_keys_are_neither_listed_nor_revocable(
    client: FlaskClient, auth: dict[str, str], other_key: str
) -> None:
    theirs = client.get("/v1/keys", headers=bearer(other_key)).get_json()
    ours = client.get("/v1/keys", headers=auth).get_json()
    assert {k["id"] for k in theirs}.isdisjoint(k["id"] for k in ours)
    assert_error(client.delete(f"/v1/keys/{theirs[0]['id']}", headers=auth), 404, "not_found")
    assert client.get("/v1/missions", headers=bearer(other_key)).status_code == 200
    assert_error(client.delete("/v1/keys/key_nope", headers=auth), 404, "not_found")


def test_last_use_is_recorded_at_most_once_a_minute(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    assert client.get("/v1/keys", headers=auth).get_json()[0]["lastUsedAt"] is not None
    first = db.execute("SELECT last_used_at FROM api_keys").fetchone()["last_used_at"]
    for _ in range(3):
        client.get("/v1/missions", headers=auth)
    assert db.execute("SELECT last_used_at FROM api_keys").fetchone()["last_used_at"] == first
    db.execute("UPDATE api_keys SET last_used_at = now() - interval '61 seconds'")
    client.get("/v1/missions", headers=auth)
    assert db.execute("SELECT last_used_at FROM api_keys").fetchone()["last_used_at"] > first


def test_the_cli_lists_creates_revokes_and_rotates_keys(database_url: str, client: FlaskClient) -> None:
    created = missions("keys", "create", "--project", "acme", "--name", "deploy", DATABASE_URL=database_url)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    listed = missions("keys", "list", "--project", "acme", DATABASE_URL=database_url)
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if "deploy" in line)
    key_id = line.split()[0]
    assert secret[:12] in line and secret not in listed.stdout
    rotated = missions("keys", "rotate", "--project", "acme", key_id, DATABASE_URL=database_url)
    assert rotated.returncode == 0, rotated.stderr
    successor = rotated.stdout.strip().splitlines()[-1]
    assert client.get("/v1/missions", headers=bearer(secret)).status_code == 401
    assert client.get("/v1/missions", headers=bearer(successor)).status_code == 200
    names = [k["name"] for k in client.get("/v1/keys", headers=bearer(successor)).get_json()]
    assert names == ["deploy", "deploy"]
    successor_id = client.get("/v1/keys", headers=bearer(successor)).get_json()[-1]["id"]
    revoked = missions("keys", "revoke", "--project", "acme", successor_id, DATABASE_URL=database_url)
    assert revoked.returncode == 0, revoked.stderr
    assert client.get("/v1/missions", headers=bearer(successor)).status_code == 401


def test_the_cli_refuses_an_unknown_project_or_key(database_url: str) -> None:
    unknown = missions("keys", "list", "--project", "nobody", DATABASE_URL=database_url)
    assert unknown.returncode != 0 and "not found" in unknown.stderr
    missions("keys", "create", "--project", "acme", DATABASE_URL=database_url)
    bad = missions("keys", "revoke", "--project", "acme", "key_nope", DATABASE_URL=database_url)
    assert bad.returncode != 0 and "not found" in bad.stderr


def test_a_repeated_create_with_an_idempotency_key_creates_no_second_key_and_never_stores_the_secret(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    headers = {**auth, "Idempotency-Key": "new-key"}
    first = client.post("/v1/keys", json={"name": "ci"}, headers=headers)
    assert first.status_code == 201
    secret = first.get_json()["key"]
    again = client.post("/v1/keys", json={"name": "ci"}, headers=headers)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == {**first.get_json(), "key": None}
    assert len(client.get("/v1/keys", headers=auth).get_json()) == 2  # the fixture's and this one
    stored = db.execute("SELECT body FROM idempotency_keys").fetchone()["body"]
    assert secret.encode() not in bytes(stored)
