"""The read side of the event log, and the Redis wake-up that tells relays to read it.

Postgres holds every event; Redis pub/sub only says "run R has something new" and may lose that
message (pub/sub is at-most-once, and a publish that fails is logged, never raised). A relay that
missed a wake-up still finds the event by reading the log again, so no event depends on Redis.

The writer appends a run's events while holding the lock on that run's row, so within one run the
``id`` order is the commit order: an event with a smaller id is always visible before one with a
larger id. Reading ``id > last_id`` therefore never skips an event that commits later.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import psycopg
import redis
from psycopg.rows import class_row

log = logging.getLogger(__name__)

# The event after which a run's stream has nothing more to say.
MISSION_DONE = "mission:done"

FETCH_EVENTS = """
    SELECT id, type, data
    FROM events
    WHERE run_id = %(run_id)s AND id > %(after_id)s
    ORDER BY id
    LIMIT %(limit)s
"""

DONE_EVENT_AT_OR_BEFORE = """
    SELECT 1
    FROM events
    WHERE run_id = %(run_id)s AND type = %(type)s AND id <= %(event_id)s
    LIMIT 1
"""


@dataclass(frozen=True)
class StoredEvent:
    id: int
    type: str
    data: Any


def channel(mission_id: str) -> str:
    """The pub/sub channel that carries the wake-ups of every run of one mission."""
    return f"mission:{mission_id}"


def publish_wakeup(client: redis.Redis, mission_id: str, run_id: str, event_id: int) -> None:
    """Tell relays of ``mission_id`` that ``run_id`` has events up to ``event_id``.

    Call it only after the transaction that wrote the events committed. A Redis failure is logged
    and swallowed: the events are already safe in Postgres and relays poll for them anyway.
    """
    message = json.dumps({"runId": run_id, "eventId": event_id})
    try:
        client.publish(channel(mission_id), message)
    except redis.RedisError:
        log.warning("could not publish the wake-up for run %s event %s; relays will poll", run_id, event_id,
                    exc_info=True)


def fetch_events(conn: psycopg.Connection[Any], run_id: str, after_id: int, limit: int = 500) -> list[StoredEvent]:
    """The events of ``run_id`` with an id above ``after_id``, oldest first, at most ``limit``."""
    with conn.cursor(row_factory=class_row(StoredEvent)) as cursor:
        cursor.execute(FETCH_EVENTS, {"run_id": run_id, "after_id": after_id, "limit": limit})
        return cursor.fetchall()


def ended_at_or_before(conn: psycopg.Connection[Any], run_id: str, event_id: int) -> bool:
    """True when the run's ``mission:done`` event has an id of at most ``event_id``: a client that
    has seen ``event_id`` has seen the whole run."""
    with conn.cursor() as cursor:
        cursor.execute(DONE_EVENT_AT_OR_BEFORE, {"run_id": run_id, "type": MISSION_DONE, "event_id": event_id})
        return cursor.fetchone() is not None
