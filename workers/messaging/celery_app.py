"""The Celery application factory and the three task names the system uses.

- ``missions.run_task(run_id, task_id, attempt)``: run one attempt (claim, agent, record, step);
- ``missions.assess_task(run_id, task_id, attempt)``: score an attempt whose assessment was lost;
- ``missions.tick()``: timers and repair, sent by beat every ``MISSIONS_TICK_SECONDS``.

Tasks are thin: they pass ids, and the ``Executor`` re-reads everything under lock.
"""

from __future__ import annotations

import logging
import socket
from datetime import timedelta
from typing import Any

from celery import Celery
from kombu import Queue

from config import Settings
from workers.messaging import broker
from workers.messaging.dispatch import ASSESS_TASK, CONTROL_QUEUE, RUN_TASK, TASK_QUEUE, TICK, Dispatcher

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


def create_celery(settings: Settings, *, with_tasks: bool = False) -> Celery:
    """A Celery app on ``REDIS_URL``. ``with_tasks`` registers the task bodies (workers only)."""
    if not settings.redis_url:
        raise ValueError("REDIS_URL is not set")
    app = Celery("missions", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        **DELIVERY_SETTINGS,
        broker_transport=broker.transport_for(settings.redis_url),
        task_default_queue=TASK_QUEUE,
        task_queues=(Queue(TASK_QUEUE), Queue(CONTROL_QUEUE)),
        task_routes={TICK: {"queue": CONTROL_QUEUE}},
        beat_schedule={
            "missions-tick": {
                "task": TICK,
                "schedule": timedelta(seconds=settings.tick_seconds),
                "options": {"queue": CONTROL_QUEUE, "expires": max(5.0, settings.tick_seconds * 5)},
            }
        },
    )
    if with_tasks:
        register_tasks(app, settings)
    return app


def register_tasks(app: Celery, settings: Settings) -> None:
    from workers.execution.executor import Executor, utcnow
    from workers.wiring import Services
    from workers.coordination.tick import tick

    services = Services(settings)
    state: dict[str, Any] = {}

    def executor(hostname: str | None) -> Executor:
        if "executor" not in state:
            dispatcher = Dispatcher(app, services.redis, services.wakeups)
            state["executor"] = Executor(services, dispatcher, hostname or socket.gethostname())
        return state["executor"]  # type: ignore[no-any-return]

    @app.task(name=RUN_TASK, bind=True)
    def run_task(self: Any, run_id: str, task_id: str, attempt: int) -> str:
        return executor(self.request.hostname).run_attempt(run_id, task_id, int(attempt))

    @app.task(name=ASSESS_TASK, bind=True)
    def assess_task(self: Any, run_id: str, task_id: str, attempt: int) -> str:
        return executor(self.request.hostname).assess(run_id, task_id, int(attempt))

    @app.task(name=TICK, bind=True)
    def tick_task(self: Any) -> dict[str, int]:
        ex = executor(self.request.hostname)
        report = tick(services, ex.dispatcher, utcnow())
        return vars(report)

    app.missions_services = services  # type: ignore[attr-defined]
