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

from psycopg.rows import class_row, tuple_row

from workers.store.db import Connection
from workers.store.queries import query

# The event after which a run's stream has nothing more to say.
MISSION_DONE = "mission:done"

FETCH_EVENTS = query("fetch_events")
DONE_EVENT_AT_OR_BEFORE = query("done_event_at_or_before")
LATEST_EVENT_IDS = query("latest_event_ids")


@dataclass(frozen=True)
class StoredEvent:
    id: int
    type: str
    data: Any


def fetch_events(conn: Connection, run_id: str, after_id: int, limit: int = 500) -> list[StoredEvent]:
    """The events of ``run_id`` with an id above ``after_id``, oldest first, at most ``limit``."""
    with conn.cursor(row_factory=class_row(StoredEvent)) as cursor:
        cursor.execute(FETCH_EVENTS, {"run_id": run_id, "after_id": after_id, "limit": limit})
        return cursor.fetchall()


def ended_at_or_before(conn: Connection, run_id: str, event_id: int) -> bool:
    """True when a ``mission:done`` event of the run has an id of at most ``event_id`` and no event
    came after ``event_id``: a client that has seen ``event_id`` has seen the whole run (a run
    continued after it failed has events after its first ``mission:done``)."""
    with conn.cursor() as cursor:
        cursor.execute(DONE_EVENT_AT_OR_BEFORE, {"run_id": run_id, "type": MISSION_DONE, "event_id": event_id})
        return cursor.fetchone() is not None


def latest_event_ids(conn: Connection, run_ids: list[str]) -> dict[str, int]:
    """The id of the last event of each of ``run_ids`` that has events."""
    with conn.cursor(row_factory=tuple_row) as cursor:
        cursor.execute(LATEST_EVENT_IDS, {"run_ids": run_ids})
        return {str(run_id): int(last) for run_id, last in cursor.fetchall() if last is not None}
