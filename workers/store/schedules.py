"""Schedule rows: due missions, the record of every fire, and the next fire of a mission."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from workers.store.db import Connection
from workers.store.queries import query

DUE = query("due_missions")
LOCK_DUE = query("lock_due_mission")
RECORD_FIRE = query("record_fire")
SKIP_FIRE = query("skip_fire")
SET_FIRE_RUN = query("set_fire_run")
CLEAR_NEXT_RUN = query("clear_next_run")
ADVANCE = query("advance_schedule")
LIST_FIRES = query("list_fires")
LIST_FIRES_AFTER = query("list_fires_after")


def due(conn: Connection, now: datetime, limit: int) -> list[str]:
    return [row["id"] for row in conn.execute(DUE, {"now": now, "limit": limit})]


def lock_due(conn: Connection, mission_id: str, now: datetime) -> dict[str, Any] | None:
    """The mission if it is still due and no other tick holds it, locked."""
    row = conn.execute(LOCK_DUE, {"id": mission_id, "now": now}).fetchone()
    return dict(row) if row is not None else None


def record_fire(
    conn: Connection, mission_id: str, fire_at: datetime, status: str, reason: str | None, now: datetime
) -> bool:
    """Record a fire; False when it was recorded before (by another tick, or before a crash)."""
    return (
        conn.execute(
            RECORD_FIRE, {"mission_id": mission_id, "fire_at": fire_at, "status": status, "reason": reason, "now": now}
        ).fetchone()
        is not None
    )


def skip_fire(conn: Connection, mission_id: str, fire_at: datetime, reason: str) -> None:
    conn.execute(SKIP_FIRE, {"mission_id": mission_id, "fire_at": fire_at, "reason": reason})


def set_fire_run(conn: Connection, mission_id: str, fire_at: datetime, run_id: str) -> None:
    conn.execute(SET_FIRE_RUN, {"mission_id": mission_id, "fire_at": fire_at, "run_id": run_id})


def clear_next_run(conn: Connection, mission_id: str) -> None:
    conn.execute(CLEAR_NEXT_RUN, {"id": mission_id})


def advance(conn: Connection, mission_id: str, next_run_at: datetime | None, status: str | None, now: datetime) -> None:
    conn.execute(ADVANCE, {"id": mission_id, "next_run_at": next_run_at, "status": status, "now": now})


def list_fires(
    conn: Connection, mission_id: str, limit: int, offset: int = 0, after: datetime | None = None
) -> list[dict[str, Any]]:
    """The mission's fires, newest first: ``offset`` rows in, or (keyset) those before ``after``
    (the fire time of the last fire of the previous page)."""
    if after is None:
        rows = conn.execute(LIST_FIRES, {"mission_id": mission_id, "limit": limit, "offset": offset})
    else:
        rows = conn.execute(LIST_FIRES_AFTER, {"mission_id": mission_id, "limit": limit, "fire_at": after})
    return [dict(r) for r in rows]
