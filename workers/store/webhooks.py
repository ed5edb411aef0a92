"""Webhooks and their outbox rows.

The outbox rows themselves are written by the statements that log run events
(``workers/store/queries/runs.sql``, the ``outbox`` part of each), so an event and its deliveries
commit together. Here: the webhooks' own rows, the delivery list, and the three steps of a
delivery's life (claim one attempt, settle it, and the tick's re-send of what is due).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from workers.store.db import Connection
from workers.store.queries import query

LOCK_PROJECT = query("lock_project")
INSERT = query("insert_webhook")
LIST = query("list_webhooks")
GET = query("get_webhook")
LOCK = query("lock_webhook")
UPDATE = query("update_webhook")
DELETE = query("delete_webhook")
MISSIONS_OF_PROJECT = query("missions_of_project")
LIST_DELIVERIES = query("list_deliveries")
RESEND = query("resend_delivery")
CLAIM = query("claim_delivery")
SETTLE = query("settle_delivery")
TAKE_DUE = query("take_due_deliveries")


def create(
    conn: Connection, project_id: str, webhook_id: str, fields: dict[str, Any], now: datetime, max_webhooks: int
) -> dict[str, Any] | None:
    """Insert a webhook (``fields``: url, events, mission_ids, secret, enabled, description); None
    when the project has ``max_webhooks`` already (inside the caller's transaction)."""
    conn.execute(LOCK_PROJECT, {"project_id": project_id})
    params = {**fields, "id": webhook_id, "project_id": project_id, "now": now, "max_webhooks": max_webhooks}
    row = conn.execute(INSERT, params).fetchone()
    return dict(row) if row is not None else None


def list_all(conn: Connection, project_id: str) -> list[dict[str, Any]]:
    return [dict(row) for row in conn.execute(LIST, {"project_id": project_id})]


def get(conn: Connection, project_id: str, webhook_id: str, *, for_update: bool = False) -> dict[str, Any] | None:
    row = conn.execute(LOCK if for_update else GET, {"project_id": project_id, "id": webhook_id}).fetchone()
    return dict(row) if row is not None else None


def update(
    conn: Connection, project_id: str, webhook_id: str, fields: dict[str, Any], now: datetime
) -> dict[str, Any] | None:
    """Write ``fields`` (every column; ``secret`` None keeps the current one)."""
    row = conn.execute(UPDATE, {**fields, "id": webhook_id, "project_id": project_id, "now": now}).fetchone()
    return dict(row) if row is not None else None


def delete(conn: Connection, project_id: str, webhook_id: str) -> bool:
    return conn.execute(DELETE, {"project_id": project_id, "id": webhook_id}).fetchone() is not None


def foreign_missions(conn: Connection, project_id: str, mission_ids: Sequence[str]) -> list[str]:
    """The ids among ``mission_ids`` that are not missions of the project."""
    own = {row["id"] for row in conn.execute(MISSIONS_OF_PROJECT, {"project_id": project_id, "ids": list(mission_ids)})}
    return [m for m in mission_ids if m not in own]


def deliveries(
    conn: Connection, webhook_id: str, before: int | None, limit: int, only: str | None = None
) -> list[dict[str, Any]]:
    """A page of the webhook's deliveries, newest first, below the cursor ``before`` (a ``seq``),
    with their attempts; with ``only``, that delivery alone (if it is the webhook's)."""
    params = {"webhook_id": webhook_id, "before": before, "limit": limit, "only": only}
    return [dict(row) for row in conn.execute(LIST_DELIVERIES, params)]


def resend(conn: Connection, webhook_id: str, delivery_id: str, now: datetime) -> dict[str, Any] | None:
    """Make a delivery of the webhook due now (its message is the caller's to send after commit);
    the delivery as it now stands, None when the webhook has no such delivery."""
    if conn.execute(RESEND, {"webhook_id": webhook_id, "id": delivery_id, "now": now}).fetchone() is None:
        return None
    return deliveries(conn, webhook_id, None, 1, only=delivery_id)[0]


def claim(conn: Connection, delivery_id: str, now: datetime, lease_until: datetime) -> dict[str, Any] | None:
    """Take a due delivery for one attempt (with its webhook's URL and secret); None if not due."""
    row = conn.execute(CLAIM, {"id": delivery_id, "now": now, "lease_until": lease_until}).fetchone()
    return dict(row) if row is not None else None


def settle(conn: Connection, delivery_id: str, attempt: int, result: dict[str, Any], now: datetime) -> None:
    """Record attempt ``attempt`` (``result``: started_at, duration_ms, status_code, response, error,
    status, next_attempt_at) and the delivery's new status."""
    conn.execute(SETTLE, {**result, "id": delivery_id, "attempt": attempt, "now": now})


def take_due(conn: Connection, now: datetime, sent_before: datetime, limit: int) -> list[str]:
    """Due deliveries whose last message (if any) went before ``sent_before``, marked sent now."""
    return [str(row["id"]) for row in conn.execute(TAKE_DUE, {"now": now, "sent_before": sent_before, "limit": limit})]
