"""Counters that only the processes running coordinator steps can see, kept in Redis for
``GET /metrics`` (``api/metrics.py``) to read: how long each coordinator step took (a histogram),
how many events of each type the steps appended, how many failures of one item were isolated
(logged, counted and skipped so that the other items went on: a tick's timer, lost attempt, fire or
re-send, a wake-up hub's read), by the part of the work they happened in, the tokens and estimated
cost of every recorded model use by model, the beat ticks that ran or raised, the attempts started
(and retries), and histograms of attempt durations, queue waits and assessment scores. Running
totals: a scrape reads a few hashes, however long the history.

What describes the present (missions and tasks by status, the queue, the tick lag) is read from
Postgres at scrape time.

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
USAGE_KEY = "missions:metrics:usage"  # hash: "<provider/model>\t<tokens_in|tokens_out|cost_usd>" -> total
TICKS_KEY = "missions:metrics:ticks"  # hash: "ok" | "failed" -> count
USAGE_FIELDS = ("tokens_in", "tokens_out", "cost_usd")
# hash: "started", "retries" (started with attempt > 1), "handed_off" (eager hand-offs), "batched" (run
# from a message of several attempts after its first), "released" (sent on from one) -> count
ATTEMPTS_KEY = "missions:metrics:attempts"
# Histograms of what workers observe, each kept like the step histogram (non-cumulative "le:<bound>",
# "le:+Inf", count, sum) under HISTOGRAM_KEY + name: how long attempts ran (claimed -> agent
# finished), how long they waited (queued -> claimed), and the assessment scores.
HISTOGRAM_KEY = "missions:metrics:histogram:"
HISTOGRAMS: dict[str, tuple[float, ...]] = {
    "task_duration": (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
    "queue_wait": (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
    "assessment_score": (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0),
}
# The parts whose failures are isolated: the tick's (workers.coordination.tick), the SSE wake-up hub's.
ISOLATED_PARTS = (
    "schedules",
    "timers",
    "lost_workers",
    "stale_assessments",
    "agent_slots",
    "lost_messages",
    "webhooks",
    "idempotency_keys",
    "wakeup_hub",
    "retention",
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
        self._usage: dict[str, float] = {}
        self._ticks: dict[str, int] = {}
        self._attempts: dict[str, int] = {}
        self._histograms: dict[str, dict[str, float]] = {}
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

    def count_usage(self, model: str, tokens_in: int, tokens_out: int, cost_usd: float) -> None:
        if not (tokens_in or tokens_out or cost_usd):
            return  # nothing used: also keeps a model name that never answered out of the series
        with self._lock:
            for name, value in zip(USAGE_FIELDS, (tokens_in, tokens_out, cost_usd), strict=True):
                key = f"{model}\t{name}"
                self._usage[key] = self._usage.get(key, 0) + value
        self._ensure_flusher()

    def count_attempts(self, started: int, retries: int) -> None:
        if not started:
            return
        with self._lock:
            self._attempts["started"] = self._attempts.get("started", 0) + started
            self._attempts["retries"] = self._attempts.get("retries", 0) + retries
        self._ensure_flusher()

    def count_handoffs(self, taken: int, batched: int = 0, released: int = 0) -> None:
        if not (taken or batched or released):
            return
        with self._lock:
            for name, n in (("handed_off", taken), ("batched", batched), ("released", released)):
                if n:
                    self._attempts[name] = self._attempts.get(name, 0) + n
        self._ensure_flusher()

    def observe(self, name: str, value: float) -> None:
        bounds = HISTOGRAMS[name]
        bucket = next((f"le:{b:g}" for b in bounds if value <= b), "le:+Inf")
        with self._lock:
            tally = self._histograms.setdefault(name, {})
            tally[bucket] = tally.get(bucket, 0) + 1
            tally["count"] = tally.get("count", 0) + 1
            tally["sum"] = tally.get("sum", 0.0) + value
        self._ensure_flusher()

    def count_tick(self, ok: bool) -> None:
        with self._lock:
            key = "ok" if ok else "failed"
            self._ticks[key] = self._ticks.get(key, 0) + 1
        self._ensure_flusher()

    def flush(self) -> None:
        with self._lock:
            pending = (self._events, self._isolated, self._usage, self._ticks, self._attempts, self._histograms)
            if not self._count and not any(pending):
                return
            client = self._redis()
            if client is None:
                return
            buckets, events, count, total = self._buckets, self._events, self._count, self._sum
            isolated, usage, ticks = self._isolated, self._usage, self._ticks
            attempts, histograms = self._attempts, self._histograms
            self._buckets, self._events, self._isolated, self._count, self._sum = {}, {}, {}, 0, 0.0
            self._usage, self._ticks, self._attempts, self._histograms = {}, {}, {}, {}
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
            for name, amount in usage.items():
                if name.endswith("\tcost_usd"):
                    pipe.hincrbyfloat(USAGE_KEY, name, amount)
                else:
                    pipe.hincrby(USAGE_KEY, name, int(amount))
            for name, value in ticks.items():
                pipe.hincrby(TICKS_KEY, name, value)
            for name, value in attempts.items():
                pipe.hincrby(ATTEMPTS_KEY, name, value)
            for histogram, tally in histograms.items():
                for name, amount in tally.items():
                    if name == "sum":
                        pipe.hincrbyfloat(HISTOGRAM_KEY + histogram, name, amount)
                    else:
                        pipe.hincrby(HISTOGRAM_KEY + histogram, name, int(amount))
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
            self._usage, self._ticks, self._attempts, self._histograms = {}, {}, {}, {}


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


def count_usage(model: str, tokens_in: int, tokens_out: int, cost_usd: float) -> None:
    """Count the tokens and estimated cost of one recorded model use (an attempt's agent or its
    judge) under ``model`` (``provider/model``)."""
    _recorder.count_usage(model, tokens_in, tokens_out, cost_usd)


def count_attempts(started: int, retries: int) -> None:
    """Count attempts a committed step started (``retries``: those after their task's first)."""
    _recorder.count_attempts(started, retries)


def count_handoffs(taken: int, batched: int = 0, released: int = 0) -> None:
    """Attempts a worker thread ran itself without a message of their own: ``taken``, handed off by
    the step it ran; ``batched``, the later attempts of a message of several. And ``released``: those
    of such a message it sent on instead, one message each, because one before them was slow."""
    _recorder.count_handoffs(taken, batched, released)


def observe(name: str, value: float) -> None:
    """Add ``value`` to the histogram ``name`` (one of ``HISTOGRAMS``)."""
    _recorder.observe(name, value)


def count_tick(ok: bool) -> None:
    """Count one beat tick that ran (``ok``) or raised."""
    _recorder.count_tick(ok)


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


def read_usage(client: Any) -> dict[str, dict[str, float]]:
    """The stored usage totals: ``{"provider/model": {"tokens_in": n, "tokens_out": n, "cost_usd": x}}``."""
    totals: dict[str, dict[str, float]] = {}
    for key, value in (client.hgetall(USAGE_KEY) or {}).items():
        model, _, name = _text(key).rpartition("\t")
        if model and name in USAGE_FIELDS:
            totals.setdefault(model, dict.fromkeys(USAGE_FIELDS, 0.0))[name] = float(value)
    return totals


def read_ticks(client: Any) -> dict[str, int]:
    """The stored tick counts, ``ok`` and ``failed``."""
    return {_text(k): int(v) for k, v in (client.hgetall(TICKS_KEY) or {}).items()}


def read_attempts(client: Any) -> dict[str, int]:
    """The stored attempt counts: ``started``, ``retries``, ``handed_off``, ``batched``, ``released``."""
    return {_text(k): int(v) for k, v in (client.hgetall(ATTEMPTS_KEY) or {}).items()}


def read_histogram(client: Any, name: str) -> dict[str, float]:
    """The stored histogram ``name``: non-cumulative ``le:*`` buckets, ``count``, ``sum``."""
    return {_text(k): float(v) for k, v in (client.hgetall(HISTOGRAM_KEY + name) or {}).items()}
