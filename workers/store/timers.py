"""Timer rows: written by the steps that schedule or cancel them, taken by the tick when due."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from workers.store.db import Connection
from workers.store.queries import query
from workers.support import tracing

SCHEDULE = query("schedule_timer")
CANCEL = query("cancel_timer")
TAKE_DUE = query("take_due_timer")


@dataclass(frozen=True)
class TimerChange:
    """One timer a step schedules (``due_at`` set) or cancels (``due_at`` None)."""

    kind: str
    key: str
    due_at: datetime | None = None


def apply(conn: Connection, run_id: str, changes: Sequence[TimerChange]) -> None:
    """Carry out a step's timer changes, in the order the step decided them."""
    with conn.cursor() as cur:
        for change in changes:
            params: dict[str, Any] = {"run_id": run_id, "kind": change.kind, "key": change.key}
            if change.due_at is None:
                cur.execute(CANCEL, params)
            else:
                cur.execute(SCHEDULE, {**params, "due_at": change.due_at})


def take_due(conn: Connection, now: datetime) -> dict[str, Any] | None:
    """One timer due at ``now`` (``run_id``, ``kind``, ``key``, and its run's ``traceparent`` while
    tracing is on), deleted in the caller's transaction."""
    row = conn.execute(TAKE_DUE, {"now": now, "traced": tracing.enabled()}).fetchone()
    return dict(row) if row is not None else None
