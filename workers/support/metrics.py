"""Counters that only the processes running coordinator steps can see, kept in Redis for
``GET /metrics`` (``api/metrics.py``) to read: how long each coordinator step took (a histogram),
how many events of each type the steps appended, and how many failures of one item were isolated
(logged, counted and skipped so that the other items went on: a tick's timer, lost attempt, fire or
re-send, a wake-up hub's read), by the part of the work they happened in.

Everything else the metrics show is computed from Postgres at scrape time.

``observe_step`` does no I/O: it adds to an in-process tally under a lock, so calling it inside the
step's transaction (with the run row locked) costs nothing measurable, even when Redis hangs. A
daemon thread of each process writes the tally to Redis once a second (one pipeline of
HINCRBY/HINCRBYFLOAT), and again at exit. When Redis fails, the counts of that flush are dropped
and logged once: metrics never fail a step. Until ``configure`` names a Redis client the tally
just accumulates (a fixed set of keys, so it stays small).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STEP_KEY = "missions:metrics:coordinator_step"  # hash: "le:<bucket>" (not cumulative), "le:+Inf", count, sum
EVENTS_KEY = "missions:metrics:events"  # hash: event type -> count
ISOLATED_KEY = "missions:metrics:isolated_failures"  # hash: part -> count
# The parts whose failures are isolated: the tick's (workers.coordination.tick), the SSE wake-up hub's.
ISOLATED_PARTS = (
    "schedules",
    "timers",
    "lost_workers",
    "stale_assessments",
    "lost_messages",
    "idempotency_keys",
    "wakeup_hub",
)
FLUSH_SECONDS = 1.0


class Recorder:
    def __init__(self, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.flush_seconds = flush_seconds
        self._lock = threading.Lock()
        self._factory: Callable[[], Any] | None = None
        self._client: Any = None
        self._buckets: dict[str, int] = {}
        self._events: dict[str, int] = {}
        self._isolated: dict[str, int] = {}
        self._count = 0
        self._sum = 0.0
        self._flusher_pid: int | None = None
        self._warned = False
        self._exit_hook = False

    def configure(self, client: Any) -> None:
        """``client`` is a redis client, or a callable returning one (called on the first flush)."""
        if not self._exit_hook:
            self._exit_hook = True
            atexit.register(self.flush)
        with self._lock:
            if callable(client) and not hasattr(client, "pipeline"):
                self._factory, self._client = client, None
            else:
                self._factory, self._client = None, client

    def observe_step(self, seconds: float, event_types: Iterable[str] = ()) -> None:
        bucket = next((f"le:{b:g}" for b in STEP_BUCKETS if seconds <= b), "le:+Inf")
        with self._lock:
            self._buckets[bucket] = self._buckets.get(bucket, 0) + 1
            self._count += 1
            self._sum += seconds
            for kind in event_types:
                self._events[kind] = self._events.get(kind, 0) + 1
        self._ensure_flusher()

    def count_events(self, event_types: Iterable[str]) -> None:
        with self._lock:
            for kind in event_types:
                self._events[kind] = self._events.get(kind, 0) + 1
        self._ensure_flusher()

    def count_isolated(self, part: str) -> None:
        with self._lock:
            self._isolated[part] = self._isolated.get(part, 0) + 1
        self._ensure_flusher()

    def flush(self) -> None:
        with self._lock:
            if not self._count and not self._events and not self._isolated:
                return
            client = self._redis()
            if client is None:
                return
            buckets, events, count, total = self._buckets, self._events, self._count, self._sum
            isolated = self._isolated
            self._buckets, self._events, self._isolated, self._count, self._sum = {}, {}, {}, 0, 0.0
        try:
            pipe = client.pipeline(transaction=False)
            for name, value in buckets.items():
                pipe.hincrby(STEP_KEY, name, value)
            if count:
                pipe.hincrby(STEP_KEY, "count", count)
                pipe.hincrbyfloat(STEP_KEY, "sum", total)
            for name, value in events.items():
                pipe.hincrby(EVENTS_KEY, name, value)
            for name, value in isolated.items():
                pipe.hincrby(ISOLATED_KEY, name, value)
            pipe.execute()
        except Exception:  # metrics must never break the work they measure
            if not self._warned:
                log.warning("could not write coordinator metrics to Redis; dropping them", exc_info=True)
                self._warned = True

    def _redis(self) -> Any:
        if self._client is None and self._factory is not None:
            try:
                self._client = self._factory()
            except Exception:
                log.warning("no Redis client for metrics", exc_info=True)
                self._factory = None
        return self._client

    def _ensure_flusher(self) -> None:
        # One per process: a prefork child does not inherit its parent's thread.
        if self._flusher_pid == os.getpid():
            return
        with self._lock:
            if self._flusher_pid == os.getpid():
                return
            self._flusher_pid = os.getpid()
        thread = threading.Thread(target=self._flush_forever, name="missions-metrics", daemon=True)
        thread.start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self.flush_seconds)
            self.flush()

    def reset(self) -> None:
        with self._lock:
            self._buckets, self._events, self._isolated, self._count, self._sum = {}, {}, {}, 0, 0.0


_recorder = Recorder()


def configure(client: Any) -> None:
    """Name the Redis client (or a callable that returns one) the counters go to."""
    _recorder.configure(client)


def observe_step(seconds: float, event_types: Iterable[str] = ()) -> None:
    """Count one coordinator step that took ``seconds`` and appended events of ``event_types``."""
    _recorder.observe_step(seconds, event_types)


def count_events(event_types: Iterable[str]) -> None:
    """Count events appended to the log (by type), outside of a step's timing."""
    _recorder.count_events(event_types)


def count_isolated(part: str) -> None:
    """Count one failure that was isolated in ``part`` (one of ``ISOLATED_PARTS``): its item was
    logged and skipped, and the other items went on."""
    _recorder.count_isolated(part)


def flush() -> None:
    _recorder.flush()


def read(client: Any) -> tuple[dict[str, float], dict[str, int]]:
    """The stored step histogram (``le:*`` buckets, ``count``, ``sum``) and events by type."""
    steps = {_text(k): float(v) for k, v in (client.hgetall(STEP_KEY) or {}).items()}
    events = {_text(k): int(v) for k, v in (client.hgetall(EVENTS_KEY) or {}).items()}
    return steps, events


def read_isolated(client: Any) -> dict[str, int]:
    """The stored counts of isolated failures, by part."""
    return {_text(k): int(v) for k, v in (client.hgetall(ISOLATED_KEY) or {}).items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
