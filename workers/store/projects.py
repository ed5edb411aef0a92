"""Projects and their API keys. Keys are stored as SHA-256 digests, never in the clear."""

from __future__ import annotations

import hmac
from typing import Any

import psycopg

from workers.support.ids import KEY_PREFIX, hash_api_key, new_api_key, new_id


def ensure_project(conn: psycopg.Connection[Any], name: str) -> str:
    """The id of the project called ``name``, created if new (safe under concurrent calls)."""
    row = conn.execute(
        "INSERT INTO projects (id, name) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING RETURNING id",
        (new_id("prj"), name),
    ).fetchone()
    if row is None:
        row = conn.execute("SELECT id FROM projects WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return str(row["id"] if isinstance(row, dict) else row[0])


def create_key(conn: psycopg.Connection[Any], project_name: str) -> str:
    """Create a key for the project (creating the project if new) and return the secret once."""
    project_id = ensure_project(conn, project_name)
    secret = new_api_key()
    conn.execute(
        "INSERT INTO api_keys (id, project_id, key_hash, prefix) VALUES (%s, %s, %s, %s)",
        (new_id("key"), project_id, hash_api_key(secret), secret[: len(KEY_PREFIX) + 4]),
    )
    return secret


def project_for_key(conn: psycopg.Connection[Any], secret: str) -> str | None:
    """The project a live key belongs to, or None. The lookup is by digest; the final comparison
    is constant-time so that timing says nothing about how much of a digest matched."""
    if not secret.startswith(KEY_PREFIX):
        return None
    digest = hash_api_key(secret)
    row = conn.execute(
        "SELECT project_id, key_hash FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL", (digest,)
    ).fetchone()
    if row is None:
        return None
    stored = row["key_hash"] if isinstance(row, dict) else row[1]
    if not hmac.compare_digest(bytes(stored), digest):
        return None
    return str(row["project_id"] if isinstance(row, dict) else row[0])
