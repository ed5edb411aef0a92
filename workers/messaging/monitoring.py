"""What the operators' tools ask the broker: live workers (Celery's own ping and stats), the
length of each queue, and Flower with the task events it needs switched off again when it leaves.

Workers start with task events off (``worker_send_task_events=False``: a no-op task pays for two
event publishes otherwise). Flower sends ``enable_events`` to every worker every few seconds while
it runs and nothing when it stops, so the workers kept publishing events for nobody. ``run_flower``
broadcasts ``disable_events`` once Flower has stopped, however it stopped (Ctrl-C, SIGTERM, an
error). Celery has no count of who wants events: a second monitor (another Flower, ``celery
events``) that is still running re-enables them within its own interval (Flower's is 5 s).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery

from workers.messaging.dispatch import CONTROL_QUEUE, TASK_QUEUE

log = logging.getLogger(__name__)

QUEUES = (TASK_QUEUE, CONTROL_QUEUE)


@dataclass(frozen=True)
class Worker:
    """A worker that answered: its node name, pool size, and what it runs now."""

    name: str
    concurrency: int | None
    pool: str | None
    active: int | None
    queues: tuple[str, ...]


def live_workers(app: Celery, timeout: float = 1.0) -> list[Worker]:
    """The workers that answer within ``timeout`` (Celery's ``inspect stats``, ``active`` and
    ``active_queues``: one broadcast each)."""
    inspect = app.control.inspect(timeout=timeout)
    stats: dict[str, Any] = inspect.stats() or {}
    if not stats:
        return []
    active: dict[str, Any] = inspect.active() or {}
    queues: dict[str, Any] = inspect.active_queues() or {}
    found = []
    for name, info in sorted(stats.items()):
        pool = info.get("pool") or {}
        concurrency = pool.get("max-concurrency")
        running = active.get(name)
        found.append(
            Worker(
                name=name,
                concurrency=int(concurrency) if concurrency is not None else None,
                pool=str(pool.get("implementation") or "").split(":", 1)[0].rsplit(".", 1)[-1] or None,
                active=len(running) if running is not None else None,
                queues=tuple(q.get("name", "") for q in queues.get(name) or []),
            )
        )
    return found


def queue_lengths(redis_client: Any, queues: Sequence[str] = QUEUES) -> dict[str, int]:
    """Messages waiting in each broker queue (kombu's Redis transport keeps a queue in a list of
    its name; one pipeline)."""
    pipe = redis_client.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(queue)
    return {queue: int(n) for queue, n in zip(queues, pipe.execute(), strict=True)}


def run_flower(app: Celery, argv: Sequence[str]) -> None:
    """Run ``celery flower`` with ``argv`` on ``app`` until it stops, then switch task events off."""
    try:
        app.start(["flower", *argv])
    finally:
        try:
            app.control.disable_events()
        except Exception:  # the broker may be gone: say so instead of a traceback
            log.warning("could not tell the workers to stop sending task events", exc_info=True)
