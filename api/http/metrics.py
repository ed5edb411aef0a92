"""``GET /metrics`` in the Prometheus text format.

A scrape costs the same however long the history. What describes the present is read from
Postgres, each through an index that holds only that: missions and the tasks of live runs by
status, the tick lag, the queued attempts (queue depth and the oldest one's age). What happened
over time is counted by the processes where it happens, as running totals in Redis
(``workers.support.metrics``, flushed once a second): attempts started and retries, attempt
durations, queue waits and assessment scores (histograms), coordinator steps, events, isolated
failures, tokens and cost by model, ticks. Those counters start again from 0 if Redis loses its
data, which Prometheus treats as a counter reset. SSE clients are counted by each API process and
summed through Redis keys that expire, so a crashed process stops counting within a minute.

Metrics are global to the server (every project), so they are not behind an API key (a key sees
one project). With ``MISSIONS_METRICS_TOKEN`` set the route wants that token as a bearer token
(Prometheus' ``authorization`` scrape setting); without it, keep the route on an internal network.
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from api.http.errors import error_response
from orchestrator.engine import MissionStatus, TaskStatus
from workers.messaging import monitoring
from workers.messaging.dispatch import TASK_QUEUE
from workers.store import metrics as store_metrics
from workers.support import metrics as worker_metrics
from workers.wiring import Services

log = logging.getLogger(__name__)

MISSION_STATUSES = tuple(s.value for s in MissionStatus)
TASK_STATUSES = tuple(s.value for s in TaskStatus if s is not TaskStatus.DRAFT)  # (a run's tasks are never drafts)
# The attempt counts workers keep (workers.support.metrics.ATTEMPTS_KEY): field, family, help.
ATTEMPT_COUNTERS = (
    ("started", "missions_attempts", "Task attempts started (queued to run)."),
    ("retries", "missions_retries", "Attempts after the first one of a task (retries, escalations, re-runs)."),
    (
        "handed_off",
        "missions_attempts_handed_off",
        (
            "Attempts a worker thread ran itself right after the step that started them (eager hand-off: "
            "no broker round trip)."
        ),
    ),
    (
        "batched",
        "missions_attempts_batched",
        (
            "Attempts a worker thread ran after the first of one message carrying several (started together: "
            "one broker round trip for all)."
        ),
    ),
    (
        "released",
        "missions_attempts_released",
        (
            "Attempts of a message of several that its thread sent on, a message each, because one before "
            "them was slow (MISSIONS_BATCH_RELEASE_SECONDS)."
        ),
    ),
)
# The histograms workers observe (workers.support.metrics.HISTOGRAMS): name, family, help.
HISTOGRAMS = (
    (
        "task_duration",
        "missions_task_duration_seconds",
        "How long task attempts ran (claimed by a worker until the agent finished).",
    ),
    (
        "queue_wait",
        "missions_task_queue_wait_seconds",
        "How long task attempts waited for a worker (queued until claimed).",
    ),
    ("assessment_score", "missions_assessment_score", "Assessment scores (1-5) of task attempts."),
)
SSE_KEY_PREFIX = "missions:metrics:sse_clients:"


class SseClients:
    """Open SSE streams of this process, published to Redis under a per-process key with a TTL."""

    def __init__(self, services: Services, ttl_seconds: float) -> None:
        self.services = services
        self.ttl = max(10, int(ttl_seconds))
        self.key = f"{SSE_KEY_PREFIX}{socket.gethostname()}:{os.getpid()}"
        self.count = 0
        self._lock = threading.Lock()
        self._published_at = 0.0

    def track(self, frames: Iterable[Any]) -> Iterator[Any]:
        """``frames`` counted as one connected client from the first frame until closed."""
        self._change(+1)
        try:
            for frame in frames:
                yield frame
                if time.monotonic() - self._published_at > self.ttl / 3:
                    self._publish()  # keep the key alive while streams stay open
        finally:
            self._change(-1)
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    def _change(self, delta: int) -> None:
        with self._lock:
            self.count += delta
        self._publish()

    def _publish(self) -> None:
        self._published_at = time.monotonic()
        try:
            if self.count:
                self.services.redis.set(self.key, self.count, ex=self.ttl)
            else:
                self.services.redis.delete(self.key)
        except Exception:  # a metric must never break a stream
            log.debug("could not publish the SSE client count", exc_info=True)

    def total(self) -> float:
        """Open streams of every API process (this one's count when Redis cannot say)."""
        try:
            client = self.services.redis
            keys = list(client.scan_iter(match=f"{SSE_KEY_PREFIX}*", count=500))
            values = client.mget(keys) if keys else []
            others = sum(int(v) for k, v in zip(keys, values, strict=True) if v is not None and _text(k) != self.key)
            return float(others + self.count)
        except Exception:  # noqa: BLE001 - a metric must never break a stream
            return float(self.count)


class MissionsCollector:
    """Computes every metric at scrape time (see the module docstring)."""

    def __init__(self, services: Services, sse: SseClients) -> None:
        self.services = services
        self.sse = sse

    def describe(self) -> list[Metric]:
        return []  # everything is computed per scrape

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "missions_metrics_source_up", "1 when the source answered this scrape.", labels=["source"]
        )
        try:
            yield from self._from_postgres()
            up.add_metric(["postgres"], 1)
        except Exception:
            log.warning("metrics: Postgres query failed", exc_info=True)
            up.add_metric(["postgres"], 0)
        try:
            yield from self._from_redis()
            up.add_metric(["redis"], 1)
        except Exception:
            log.warning("metrics: Redis read failed", exc_info=True)
            up.add_metric(["redis"], 0)
        sse = GaugeMetricFamily("missions_sse_clients", "Open event streams (SSE clients) over all API processes.")
        sse.add_metric([], self.sse.total())
        yield sse
        yield up

    def _from_postgres(self) -> Iterator[Metric]:
        figures = store_metrics.snapshot(self.services.db)
        missions = {**dict.fromkeys(MISSION_STATUSES, 0), **figures.missions}
        tasks = {**dict.fromkeys(TASK_STATUSES, 0), **figures.tasks}
        yield _gauge("missions_missions", "Missions by status.", "status", missions)
        yield _gauge("missions_tasks", "Tasks of active and paused runs, by status.", "status", tasks)
        deliveries = {**dict.fromkeys(("pending", "failed"), 0), **figures.deliveries}
        yield _gauge(
            "missions_webhook_deliveries", "Webhook deliveries not delivered (pending, failed).", "status", deliveries
        )
        overdue = GaugeMetricFamily(
            "missions_webhook_overdue_seconds",
            "How overdue the oldest due pending webhook delivery is (0 when workers keep up).",
        )
        overdue.add_metric([], figures.deliveries_overdue)
        yield overdue
        lag = GaugeMetricFamily(
            "missions_tick_lag_seconds", "How overdue the oldest due timer is (0 when the beat tick keeps up)."
        )
        lag.add_metric([], figures.tick_lag)
        yield lag
        yield _gauge(
            "missions_queue_depth",
            "Task attempts waiting for a worker (queued in Postgres), by broker queue: the signal to scale workers on.",
            "queue",
            {TASK_QUEUE: figures.queue.queued},
        )
        yield _gauge(
            "missions_queue_oldest_age_seconds",
            "How long the oldest queued task attempt has waited for a worker (0 when none waits), by queue.",
            "queue",
            {TASK_QUEUE: figures.queue.oldest_seconds},
        )

    def _from_redis(self) -> Iterator[Metric]:
        yield _gauge(
            "missions_broker_queue_length",
            "Messages waiting in each broker queue (Redis list length; one message may carry several attempts of "
            "one run).",
            "queue",
            monitoring.queue_lengths(self.services.redis),
        )
        tokens = CounterMetricFamily(
            "missions_tokens",
            "Tokens used by recorded model calls (agents and judges), by provider, model and direction.",
            labels=["provider", "model", "direction"],
        )
        cost = CounterMetricFamily(
            "missions_cost_usd",
            "Estimated cost in USD of recorded model calls, by provider and model.",
            labels=["provider", "model"],
        )
        for name, totals in sorted(worker_metrics.read_usage(self.services.redis).items()):
            provider, _, model = name.partition("/")
            tokens.add_metric([provider, model, "input"], totals["tokens_in"])
            tokens.add_metric([provider, model, "output"], totals["tokens_out"])
            cost.add_metric([provider, model], totals["cost_usd"])
        yield tokens
        yield cost
        ticks = CounterMetricFamily(
            "missions_ticks", "Beat ticks run by workers, by outcome (failed: the tick raised).", labels=["outcome"]
        )
        for outcome, count in {"ok": 0, "failed": 0, **worker_metrics.read_ticks(self.services.redis)}.items():
            ticks.add_metric([outcome], count)
        yield ticks
        client = self.services.redis
        attempts = worker_metrics.read_attempts(client)
        for field, family, text in ATTEMPT_COUNTERS:
            yield CounterMetricFamily(family, text, value=attempts.get(field, 0))
        for name, family, text in HISTOGRAMS:
            yield _redis_histogram(
                family, text, worker_metrics.HISTOGRAMS[name], worker_metrics.read_histogram(client, name)
            )
        steps, events = worker_metrics.read(client)
        yield _redis_histogram(
            "missions_coordinator_step_seconds",
            "Duration of coordinator steps (run row locked, decide, state and events written).",
            worker_metrics.STEP_BUCKETS,
            steps,
        )
        published = CounterMetricFamily(
            "missions_events_published", "Run events appended to the event log, by type.", labels=["type"]
        )
        for kind, count in sorted(events.items()):
            published.add_metric([kind], count)
        yield published
        isolated = CounterMetricFamily(
            "missions_isolated_failures",
            "Failures of one item (a tick's timer, lost attempt, scheduled fire or re-send, a wake-up hub's "
            "read) that were logged and skipped so that the other items went on, by part.",
            labels=["part"],
        )
        counts = {
            **dict.fromkeys(worker_metrics.ISOLATED_PARTS, 0),
            **worker_metrics.read_isolated(self.services.redis),
        }
        for part, count in sorted(counts.items()):
            isolated.add_metric([part], count)
        yield isolated


def _gauge(name: str, text: str, label: str, values: Mapping[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def _redis_histogram(name: str, text: str, bounds: tuple[float, ...], stored: Mapping[str, float]) -> Metric:
    """A histogram from its stored form (``workers.support.metrics``: non-cumulative ``le:*``)."""
    cumulative, buckets = 0.0, []
    for bound in bounds:
        cumulative += stored.get(f"le:{bound:g}", 0.0)
        buckets.append((f"{bound:g}", cumulative))
    buckets.append(("+Inf", stored.get("count", cumulative + stored.get("le:+Inf", 0.0))))
    return HistogramMetricFamily(name, text, buckets=buckets, sum_value=stored.get("sum", 0.0))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
def metrics() -> Response:
    token = current_app.extensions["missions_metrics_token"]
    if token and not _bearer_matches(request.headers.get("Authorization", ""), token):
        response = error_response(401, "this server's /metrics needs its token: Authorization: Bearer <token>")
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry: CollectorRegistry = current_app.extensions["missions_metrics"]
    return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _bearer_matches(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    # Compared in constant time, so the answer's timing says nothing about how much of it matched.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def install(app: Flask, token: str | None = None) -> None:
    """Serve /metrics (wanting ``token`` as a bearer token when given), count SSE clients, and send
    this process's coordinator counters to Redis."""
    services: Services = app.extensions["missions"]
    app.extensions["missions_metrics_token"] = token
    sse = SseClients(services, ttl_seconds=max(60.0, 4 * services.settings.sse_heartbeat_seconds))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MissionsCollector(services, sse))
    app.extensions["missions_metrics"] = registry
    app.register_blueprint(blueprint)
    # API requests (execute, resume, abort, tasks) run coordinator steps too.
    worker_metrics.configure(lambda: services.redis)

    @app.after_request
    def _count_sse_clients(response: Response) -> Response:
        if response.mimetype == "text/event-stream" and response.is_streamed:
            response.response = sse.track(response.response)
        return response
