"""``GET /metrics`` in the Prometheus text format.

Workers are separate processes, so most figures are computed from Postgres when Prometheus
scrapes (the tables are the truth and survive restarts): missions and tasks by status, task
duration and queue wait, attempts and retries, assessment scores, tick lag. What only a running
coordinator step knows (its duration, the events it appended) is counted in Redis by
``workers.support.metrics``. SSE clients are counted by each API process and summed through Redis keys
that expire, so a crashed process stops counting within a minute.

Metrics are global to the server (every project); the route needs no API key, as Prometheus
expects: keep it on an internal network or behind the proxy's access rules.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from flask import Blueprint, Flask, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from orchestrator.engine import MissionStatus, TaskStatus
from workers.store import metrics as store_metrics
from workers.support import metrics as worker_metrics
from workers.wiring import Services

log = logging.getLogger(__name__)

MISSION_STATUSES = tuple(s.value for s in MissionStatus)
TASK_STATUSES = tuple(s.value for s in TaskStatus if s is not TaskStatus.DRAFT)  # (a run's tasks are never drafts)
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
SCORE_BUCKETS = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)
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
        figures = store_metrics.snapshot(
            self.services.db, duration_bounds=DURATION_BUCKETS, wait_bounds=WAIT_BUCKETS, score_bounds=SCORE_BUCKETS
        )
        missions = {**dict.fromkeys(MISSION_STATUSES, 0), **figures.missions}
        tasks = {**dict.fromkeys(TASK_STATUSES, 0), **figures.tasks}
        attempts, durations, waits, scores = figures.attempts, figures.durations, figures.waits, figures.scores
        yield _gauge("missions_missions", "Missions by status.", "status", missions)
        yield _gauge("missions_tasks", "Tasks of active and paused runs, by status.", "status", tasks)
        total = CounterMetricFamily("missions_attempts", "Task attempts created, by current status.", labels=["status"])
        retries = 0
        for row in attempts:
            total.add_metric([row["status"]], row["n"])
            retries += row["retries"]
        yield total
        yield CounterMetricFamily(
            "missions_retries", "Attempts after the first one of a task (retries, escalations, re-runs).", value=retries
        )
        yield _histogram(
            "missions_task_duration_seconds",
            "How long task attempts ran (claimed by a worker until the agent finished).",
            DURATION_BUCKETS,
            durations,
        )
        yield _histogram(
            "missions_task_queue_wait_seconds",
            "How long task attempts waited for a worker (queued until claimed).",
            WAIT_BUCKETS,
            waits,
        )
        yield _histogram(
            "missions_assessment_score", "Assessment scores (1-5) of task attempts.", SCORE_BUCKETS, scores
        )
        deliveries = {**dict.fromkeys(("pending", "delivered", "failed"), 0), **figures.deliveries}
        yield _gauge("missions_webhook_deliveries", "Webhook deliveries by status.", "status", deliveries)
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

    def _from_redis(self) -> Iterator[Metric]:
        steps, events = worker_metrics.read(self.services.redis)
        cumulative, buckets = 0.0, []
        for bound in worker_metrics.STEP_BUCKETS:
            cumulative += steps.get(f"le:{bound:g}", 0.0)
            buckets.append((f"{bound:g}", cumulative))
        buckets.append(("+Inf", steps.get("count", cumulative + steps.get("le:+Inf", 0.0))))
        yield HistogramMetricFamily(
            "missions_coordinator_step_seconds",
            "Duration of coordinator steps (run row locked, decide, state and events written).",
            buckets=buckets,
            sum_value=steps.get("sum", 0.0),
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


def _gauge(name: str, text: str, label: str, values: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def _histogram(name: str, text: str, bounds: tuple[float, ...], rows: list[Any]) -> HistogramMetricFamily:
    by_bucket = {int(r["bucket"]): (int(r["n"]), float(r["total"] or 0.0)) for r in rows}
    cumulative, buckets = 0, []
    for index, bound in enumerate(bounds):
        cumulative += by_bucket.get(index, (0, 0.0))[0]
        buckets.append((f"{bound:g}", cumulative))
    total_count = sum(n for n, _ in by_bucket.values())
    buckets.append(("+Inf", total_count))
    return HistogramMetricFamily(name, text, buckets=buckets, sum_value=sum(t for _, t in by_bucket.values()))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
def metrics() -> Response:
    registry: CollectorRegistry = current_app.extensions["missions_metrics"]
    return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def install(app: Flask) -> None:
    """Serve /metrics, count SSE clients, and send this process's coordinator counters to Redis."""
    services: Services = app.extensions["missions"]
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
