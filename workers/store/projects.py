"""Projects and their API keys. Keys are stored as SHA-256 digests, never in the clear."""

from __future__ import annotations

import hmac
from typing import Any, NamedTuple

import psycopg

from workers.store.queries import query
from workers.support.ids import KEY_PREFIX, hash_api_key, new_api_key, new_id

INSERT_PROJECT = query("insert_project")
PROJECT_BY_NAME = query("project_by_name")
INSERT_API_KEY = query("insert_api_key")
LIVE_API_KEY = query("live_api_key")


def ensure_project(conn: psycopg.Connection[Any], name: str) -> str:
    """The id of the project called ``name``, created if new (safe under concurrent calls)."""
    row = conn.execute(INSERT_PROJECT, {"id": new_id("prj"), "name": name}).fetchone()
    if row is None:
        row = conn.execute(PROJECT_BY_NAME, {"name": name}).fetchone()
    assert row is not None
    return str(row["id"] if isinstance(row, dict) else row[0])


def create_key(conn: psycopg.Connection[Any], project_name: str) -> str:
    """Create a key for the project (creating the project if new) and return the secret once."""
    project_id = ensure_project(conn, project_name)
    secret = new_api_key()
    conn.execute(
        INSERT_API_KEY,
        {
            "id": new_id("key"),
            "project_id": project_id,
            "key_hash": hash_api_key(secret),
            "prefix": secret[: len(KEY_PREFIX) + 4],
        },
    )
    return secret


class ApiKey(NamedTuple):
    """A live key as a request presents it: its project, its id and the name it is shown by (the
    prefix kept to recognise it: keys have no other name)."""

    project_id: str
    key_id: str
    name: str


def key_for_secret(conn: psycopg.Connection[Any], secret: str) -> ApiKey | None:
    """The live key a secret is, or None. The lookup is by digest; the final comparison is
    constant-time so that timing says nothing about how much of a digest matched."""
    if not secret.startswith(KEY_PREFIX):
        return None
    digest = hash_api_key(secret)
    row = conn.execute(LIVE_API_KEY, {"key_hash": digest}).fetchone()
    if row is None:
        return None
    values = tuple(row.values()) if isinstance(row, dict) else tuple(row)
    project_id, stored, key_id, prefix = values
    if not hmac.compare_digest(bytes(stored), digest):
        return None
    return ApiKey(str(project_id), str(key_id), str(prefix))


def project_for_key(conn: psycopg.Connection[Any], secret: str) -> str | None:
    """The project a live key belongs to, or None (``key_for_secret``)."""
    key = key_for_secret(conn, secret)
    return key.project_id if key is not None else None
