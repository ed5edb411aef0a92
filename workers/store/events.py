"""The read side of the event log.

Postgres holds every event; Redis pub/sub only says "run R has something new"
(``workers.messaging.wakeups``). The writer appends a run's events while holding the lock on that
run's row, so within one run the ``id`` order is the commit order: an event with a smaller id is
always visible before one with a larger id. Reading ``id > last_id`` therefore never skips an
event that commits later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg.rows import tuple_row

from orchestrator.spec import format_timestamp
from workers.store.db import Connection
from workers.store.queries import query

# The event after which a run's stream has nothing more to say.
MISSION_DONE = "mission:done"

FETCH_EVENTS = query("fetch_events")
LIST_EVENTS = query("list_events")
DONE_EVENT_AT_OR_BEFORE = query("done_event_at_or_before")
LATEST_EVENT_IDS = query("latest_event_ids")


@dataclass(frozen=True)
class StoredEvent:
    id: int
    type: str
    data: Any


def fetch_events(conn: Connection, run_id: str, after_id: int, limit: int = 500) -> list[StoredEvent]:
    """The events of ``run_id`` with an id above ``after_id``, oldest first, at most ``limit``.

    Each payload also carries ``timestamp``: the time of the step that appended it (ISO 8601, UTC),
    so a client replaying a run shows when things happened, not when it read them."""
    with conn.cursor(row_factory=tuple_row) as cursor:
        cursor.execute(FETCH_EVENTS, {"run_id": run_id, "after_id": after_id, "limit": limit})
        return [
            StoredEvent(event_id, kind, {**data, "timestamp": format_timestamp(created_at)})
            for event_id, kind, data, created_at in cursor.fetchall()
        ]


def list_events(conn: Connection, run_id: str, after_id: int, limit: int) -> list[dict[str, Any]]:
    """``fetch_events`` as rows with their ``created_at`` (the JSON page of the log; expects dict rows)."""
    return [dict(row) for row in conn.execute(LIST_EVENTS, {"run_id": run_id, "after_id": after_id, "limit": limit})]


def ended_at_or_before(conn: Connection, run_id: str, event_id: int) -> bool:
    """True when a ``mission:done`` event of the run has an id of at most ``event_id`` and no event
    came after ``event_id``: a client that has seen ``event_id`` has seen the whole run (a run
    continued after it failed has events after its first ``mission:done``)."""
    with conn.cursor() as cursor:
        cursor.execute(DONE_EVENT_AT_OR_BEFORE, {"run_id": run_id, "event_id": event_id})  # (MISSION_DONE)
        return cursor.fetchone() is not None


def latest_event_ids(conn: Connection, run_ids: list[str]) -> dict[str, int]:
    """The id of the last event of each of ``run_ids`` that has events."""
    with conn.cursor(row_factory=tuple_row) as cursor:
        cursor.execute(LATEST_EVENT_IDS, {"run_ids": run_ids})
        return {str(run_id): int(last) for run_id, last in cursor.fetchall() if last is not None}
