"""Stored responses of requests sent with an ``Idempotency-Key`` (Stripe's semantics; the HTTP side
is ``api/http/idempotency.py``).

A request claims its key in a statement that commits on its own, before it does any work, with a
lease (``locked_until``); it stores its answer when done (``finish``) or gives the key up
(``release``). A repeat of the same request finds the answer and replays it; while the first is in
progress it finds the lease; once the lease has run out without an answer (the first request's
process died), the repeat claims the key itself and runs. Rows live until ``expires_at``; the tick
deletes expired ones in small batches (``delete_expired``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from workers.store.queries import query

CLAIM = query("claim_idempotency_key")
CLAIM_ASYNC = query("claim_commits_asynchronously")
SELECT = query("select_idempotency_key")
FINISH = query("finish_idempotency_key")
RELEASE = query("release_idempotency_key")
DELETE_EXPIRED = query("delete_expired_idempotency_keys")


@dataclass(frozen=True)
class Stored:
    """What holds a key: the hash of its request, and its answer (``status`` None: in progress)."""

    request_hash: bytes
    status: int | None
    headers: dict[str, str]
    body: bytes | None
    locked: bool


def claim(
    conn: psycopg.Connection[Any],
    project_id: str,
    key: str,
    request_hash: bytes,
    *,
    lease_seconds: float,
    ttl_seconds: float,
) -> Stored | None:
    """Claim ``key`` for this request: None when claimed (run the request, then ``finish`` or
    ``release``), else what holds the key. ``conn`` must be in autocommit: the claim commits at once."""
    key_params = {"project_id": project_id, "key": key}
    params = {**key_params, "request_hash": request_hash, "lease": lease_seconds, "ttl": ttl_seconds}
    for _ in range(3):  # (a key deleted between two statements, by expiry: look again)
        # A repeat (a replay, or a 409) is answered by a read, without a write or a commit to wait for.
        held = _held(conn.execute(SELECT, key_params).fetchone())
        if held is not None and not (held.status is None and not held.locked and held.request_hash == request_hash):
            return held
        with conn.transaction():
            conn.execute(CLAIM_ASYNC)
            claimed = conn.execute(CLAIM, params).fetchone() is not None
        if claimed:
            return None
        held = _held(conn.execute(SELECT, key_params).fetchone())
        if held is not None:
            return held
    raise RuntimeError(f"could not claim idempotency key {key!r}")  # pragma: no cover - needs a 3-way race


def _held(row: Any) -> Stored | None:
    """What a live row holds (None: no row, or an expired one, which a claim takes over)."""
    if row is None or not row["live"]:
        return None
    return Stored(
        request_hash=bytes(row["request_hash"]),
        status=row["status"],
        headers=dict(row["headers"]),
        body=bytes(row["body"]) if row["body"] is not None else None,
        locked=bool(row["locked"]),
    )


def finish(
    conn: psycopg.Connection[Any],
    project_id: str,
    key: str,
    request_hash: bytes,
    status: int,
    headers: dict[str, str],
    body: bytes,
) -> bool:
    """Store the answer of the request that holds ``key``; False when it no longer held it."""
    cursor = conn.execute(
        FINISH,
        {
            "project_id": project_id,
            "key": key,
            "request_hash": request_hash,
            "status": status,
            "headers": Jsonb(headers),
            "body": body,
        },
    )
    return cursor.rowcount == 1


def release(conn: psycopg.Connection[Any], project_id: str, key: str, request_hash: bytes) -> None:
    conn.execute(RELEASE, {"project_id": project_id, "key": key, "request_hash": request_hash})


def delete_expired(conn: psycopg.Connection[Any], now: datetime, limit: int) -> int:
    """Delete at most ``limit`` expired keys; how many went."""
    return conn.execute(DELETE_EXPIRED, {"now": now, "limit": limit}).rowcount
