"""Projects and their API keys. Keys are stored as SHA-256 digests, never in the clear: a secret is
returned once, by the call that creates it.

Authenticating a request (``identify``) is one read of the key and its project; a key's last use is
written only when the stored one is more than a minute old, so that requests cost no write. A
revoked key is refused by the very next request on every process (nothing is cached)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

import psycopg

from workers.store.queries import query
from workers.support.errors import NotFound
from workers.support.ids import KEY_PREFIX, hash_api_key, new_api_key, new_id

INSERT_PROJECT = query("insert_project")
PROJECT_BY_NAME = query("project_by_name")
SET_PROJECT_RATE_LIMIT = query("set_project_rate_limit")
INSERT_API_KEY = query("insert_api_key")
LIVE_API_KEY = query("live_api_key")
TOUCH_API_KEY = query("touch_api_key")
LIST_API_KEYS = query("list_api_keys")
REVOKE_API_KEY = query("revoke_api_key")

PREFIX_LENGTH = len(KEY_PREFIX) + 4  # "sk_live_" and four characters of the secret


@dataclass(frozen=True)
class Identity:
    """Who a request's key is: the key, its project, the name it is shown by (its prefix: keys have
    no other name; a review records it), and the project's own rate limit (None: the server's)."""

    key_id: str
    project_id: str
    name: str = ""
    rate_limit: int | None = None
    rate_limit_burst: int | None = None


@dataclass(frozen=True)
class NewKey:
    """A key just created: its row and the secret, which is never available again."""

    row: dict[str, Any]
    secret: str


def ensure_project(conn: psycopg.Connection[Any], name: str) -> str:
    """The id of the project called ``name``, created if new (safe under concurrent calls)."""
    row = conn.execute(INSERT_PROJECT, {"id": new_id("prj"), "name": name}).fetchone()
    if row is None:
        row = conn.execute(PROJECT_BY_NAME, {"name": name}).fetchone()
    assert row is not None
    return str(row["id"] if isinstance(row, dict) else row[0])


def project_by_name(conn: psycopg.Connection[Any], name: str) -> dict[str, Any]:
    row = conn.execute(PROJECT_BY_NAME, {"name": name}).fetchone()
    if row is None:
        raise NotFound(f"project {name!r} not found")
    return dict(row)


def set_rate_limit(
    conn: psycopg.Connection[Any], name: str, rate_limit: int | None, rate_limit_burst: int | None
) -> dict[str, Any]:
    """Give the project its own rate limit (None: the server's); ``NotFound`` for an unknown project."""
    row = conn.execute(
        SET_PROJECT_RATE_LIMIT, {"name": name, "rate_limit": rate_limit, "rate_limit_burst": rate_limit_burst}
    ).fetchone()
    if row is None:
        raise NotFound(f"project {name!r} not found")
    return dict(row)


def new_key(conn: psycopg.Connection[Any], project_id: str, name: str | None = None) -> NewKey:
    """A new key of the project; the secret is in the result and nowhere else."""
    secret = new_api_key()
    row = conn.execute(
        INSERT_API_KEY,
        {
            "id": new_id("key"),
            "project_id": project_id,
            "key_hash": hash_api_key(secret),
            "prefix": secret[:PREFIX_LENGTH],
            "name": name,
        },
    ).fetchone()
    assert row is not None
    return NewKey(row=dict(row), secret=secret)


def create_key(conn: psycopg.Connection[Any], project_name: str, name: str | None = None) -> str:
    """Create a key for the project (creating the project if new) and return the secret once."""
    return new_key(conn, ensure_project(conn, project_name), name).secret


def list_keys(conn: psycopg.Connection[Any], project_id: str) -> list[dict[str, Any]]:
    """The project's keys, oldest first, revoked ones included (without secrets: none is stored)."""
    return [dict(row) for row in conn.execute(LIST_API_KEYS, {"project_id": project_id})]


def revoke_key(conn: psycopg.Connection[Any], project_id: str, key_id: str) -> dict[str, Any]:
    """Revoke a key of the project (at once: every request looks its key up); ``NotFound`` for a key
    of another project or none. Revoking a revoked key changes nothing."""
    row = conn.execute(REVOKE_API_KEY, {"project_id": project_id, "id": key_id}).fetchone()
    if row is None:
        raise NotFound(f"API key {key_id} not found")
    return dict(row)


def rotate_key(conn: psycopg.Connection[Any], project_id: str, key_id: str) -> NewKey:
    """Revoke a key and create its successor (same name) in the caller's transaction."""
    old = revoke_key(conn, project_id, key_id)
    return new_key(conn, project_id, old["name"])


def identify(conn: psycopg.Connection[Any], secret: str) -> Identity | None:
    """The live key ``secret`` is, with its project, or None. The lookup is by digest; the final
    comparison is constant-time so that timing says nothing about how much of a digest matched.
    Records the key's use when the stored one is over a minute old (so at most once a minute)."""
    if not secret.startswith(KEY_PREFIX):
        return None
    digest = hash_api_key(secret)
    row = conn.execute(LIVE_API_KEY, {"key_hash": digest}).fetchone()
    if row is None or not hmac.compare_digest(bytes(row["key_hash"]), digest):
        return None
    if row["use_is_stale"]:
        conn.execute(TOUCH_API_KEY, {"id": row["id"]})
    return Identity(
        key_id=str(row["id"]),
        project_id=str(row["project_id"]),
        name=str(row["prefix"]),
        rate_limit=row["rate_limit"],
        rate_limit_burst=row["rate_limit_burst"],
    )


def project_for_key(conn: psycopg.Connection[Any], secret: str) -> str | None:
    """The project a live key belongs to, or None (``identify`` without the rest)."""
    identity = identify(conn, secret)
    return identity.project_id if identity else None
