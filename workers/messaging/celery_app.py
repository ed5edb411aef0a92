"""The Celery application factory and the five task names the system uses.

- ``missions.run_task(run_id, task_id, attempt)``: run one attempt (claim, agent, record, step);
- ``missions.run_tasks(run_id, [[task_id, attempt], ...])``: several attempts of one run started
  together, run one after the other by the thread that receives it while they are quick
  (``workers.execution.batches``);
- ``missions.assess_task(run_id, task_id, attempt)``: score an attempt whose assessment was lost;
- ``missions.deliver_webhook(delivery_id)``: one attempt of a webhook delivery (queue
  ``missions.webhooks``, so slow receivers never hold agents or the tick back);
- ``missions.tick()``: timers and repair, sent by beat every ``MISSIONS_TICK_SECONDS``.

Tasks are thin: they pass ids to the handlers ``workers.wiring`` gives them, and the executor
re-reads everything under lock.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Protocol

from celery import Celery
from kombu import Queue

from config import Settings
from workers.messaging import broker
from workers.messaging.dispatch import (
    ASSESS_TASK,
    CONTROL_QUEUE,
    DELIVER_WEBHOOK,
    RUN_TASK,
    RUN_TASKS,
    TASK_QUEUE,
    TICK,
    WEBHOOK_QUEUE,
)

log = logging.getLogger(__name__)


# At-least-once delivery (DESIGN §1) and lean workers; the benchmark's raw Celery baseline uses the same.
DELIVERY_SETTINGS: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "task_ignore_result": True,
    "task_serializer": "json",
    "accept_content": ["json"],
    "broker_connection_retry_on_startup": True,
    "broker_transport_options": {"visibility_timeout": 3600},
    "worker_hijack_root_logger": False,
    "worker_send_task_events": False,
}


def create_celery(settings: Settings) -> Celery:
    """A Celery app on ``REDIS_URL``, without task bodies (``register_tasks`` adds them on workers)."""
    if not settings.redis_url:
        raise ValueError("REDIS_URL is not set")
    app = Celery("missions", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        **DELIVERY_SETTINGS,
        broker_transport=broker.transport_for(settings.redis_url),
        task_default_queue=TASK_QUEUE,
        task_queues=(Queue(TASK_QUEUE), Queue(CONTROL_QUEUE), Queue(WEBHOOK_QUEUE)),
        task_routes={TICK: {"queue": CONTROL_QUEUE}, DELIVER_WEBHOOK: {"queue": WEBHOOK_QUEUE}},
        beat_schedule={
            "missions-tick": {
                "task": TICK,
                "schedule": timedelta(seconds=settings.tick_seconds),
                "options": {"queue": CONTROL_QUEUE, "expires": max(5.0, settings.tick_seconds * 5)},
            }
        },
    )
    return app


class Handlers(Protocol):
    """What the five tasks do (built by ``workers.wiring``): each returns what happened, for the log."""

    def run_attempt(self, run_id: str, task_id: str, attempt: int, hostname: str | None) -> object: ...

    def run_attempts(self, run_id: str, items: list[tuple[str, int]], hostname: str | None) -> object: ...

    def assess(self, run_id: str, task_id: str, attempt: int, hostname: str | None) -> object: ...

    def deliver_webhook(self, delivery_id: str) -> object: ...

    def tick(self) -> object: ...


def register_tasks(app: Celery, handlers: Handlers) -> None:
    """The task bodies: thin, they hand the ids (and the worker's name) to ``handlers``. Not shared
    (``shared=False``): Celery would add a shared task to every app created later in the process,
    and a second app's own bodies would then be ignored for the first's (and its closed services)."""

    @app.task(name=RUN_TASK, bind=True, shared=False)
    def run_task(self: Any, run_id: str, task_id: str, attempt: int) -> object:
        return handlers.run_attempt(run_id, task_id, int(attempt), self.request.hostname)

    @app.task(name=RUN_TASKS, bind=True, shared=False)
    def run_tasks(self: Any, run_id: str, items: list[list[Any]]) -> object:
        attempts = [(str(task_id), int(attempt)) for task_id, attempt in items]
        return handlers.run_attempts(run_id, attempts, self.request.hostname)

    @app.task(name=ASSESS_TASK, bind=True, shared=False)
    def assess_task(self: Any, run_id: str, task_id: str, attempt: int) -> object:
        return handlers.assess(run_id, task_id, int(attempt), self.request.hostname)

    @app.task(name=DELIVER_WEBHOOK, shared=False)
    def deliver_webhook_task(delivery_id: str) -> object:
        return handlers.deliver_webhook(str(delivery_id))

    @app.task(name=TICK, shared=False)
    def tick_task() -> object:
        return handlers.tick()


def instrument_for_tracing() -> None:
    """Celery's and Redis' maintained instrumentations, once tracing is on (``workers.support.tracing``):
    a span per publish and per task run, the trace context carried in each message's headers (our
    broker transport sends them as kombu's does), and a span per Redis command made inside a traced
    span."""
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    CeleryInstrumentor().instrument()  # type: ignore[no-untyped-call]  # (the package has no annotations)
    RedisInstrumentor().instrument()
