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
import threading
import time
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


WAKEUP_INTERVAL = 0.02  # seconds between two sends of one publisher while steps keep coming


class WakeupPublisher:
    """Publishes wake-ups from one background thread, so a coordinator step never waits on Redis.

    ``publish`` only records "run R has events up to N" and returns. The thread sends what is
    pending as soon as it is idle, all of it in one pipeline, and one wake-up per run (the highest
    event id) however many steps of that run committed meanwhile: a relay that wakes reads every
    event after its last id from Postgres anyway. When idle it sends at once, so a lone step's
    wake-up is not delayed; while steps keep coming it sends at most once per ``min_interval``
    (a wake-up waits up to that long), so the batches grow and each wake-up costs less.

    Like ``publish_wakeup``, a failure is logged and the wake-ups are dropped: relays poll.
    """

    def __init__(self, client: redis.Redis, min_interval: float = WAKEUP_INTERVAL) -> None:
        self.client = client
        self.min_interval = min_interval
        self._pending: dict[str, tuple[str, int]] = {}  # run id -> (mission id, highest event id)
        self._sending = False
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self.sent = 0  # wake-ups published so far (after coalescing)

    def publish(self, mission_id: str, run_id: str, event_id: int) -> None:
        with self._lock:
            known = self._pending.get(run_id)
            if known is None or known[1] < event_id:
                self._pending[run_id] = (mission_id, event_id)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="wakeups", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything published so far has been sent (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending or self._sending:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._changed.wait(left)
        return True

    def _loop(self) -> None:
        last = float("-inf")
        while True:
            with self._lock:
                while not self._pending:
                    self._changed.wait()
            # Busy: let the next wake-ups gather for the rest of the interval (an idle publisher
            # sends at once). This bounds the publishing cost per process, not the event delivery.
            rest = last + self.min_interval - time.monotonic()
            if rest > 0:
                time.sleep(rest)
            with self._lock:
                batch, self._pending, self._sending = self._pending, {}, True
            last = time.monotonic()
            try:
                self._send(batch)
            finally:
                with self._lock:
                    self._sending = False
                    self._changed.notify_all()

    def _send(self, batch: dict[str, tuple[str, int]]) -> None:
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for run_id, (mission_id, event_id) in batch.items():
                    pipe.publish(channel(mission_id), json.dumps({"runId": run_id, "eventId": event_id}))
                pipe.execute()
            self.sent += len(batch)
        except Exception:
            log.warning("could not publish %d wake-up(s); relays will poll", len(batch), exc_info=True)


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
