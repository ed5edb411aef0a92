"""After-commit side effects: Celery messages, cancellation signals and SSE wake-ups.

The ``Sender`` of ``workers.coordination``: a unit of work hands it each committed ``AfterCommit``.
Nothing here runs inside a database transaction. A failure to send is logged and left to the
tick, which finds queued attempts whose message never reached a worker and sends them again.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from workers.coordination.outcome import AfterCommit, Inline
from workers.messaging.wakeups import WakeupPublisher, publish_wakeup

log = logging.getLogger(__name__)

T = TypeVar("T")

TASK_QUEUE = "missions"
CONTROL_QUEUE = "missions.control"
WEBHOOK_QUEUE = "missions.webhooks"
RUN_TASK = "missions.run_task"
RUN_TASKS = "missions.run_tasks"
ASSESS_TASK = "missions.assess_task"
TICK = "missions.tick"
DELIVER_WEBHOOK = "missions.deliver_webhook"


class SentTask:
    """What ``send_task`` returns for our messages instead of an ``AsyncResult``, whose constructor
    builds a result backend (per greenlet in the API): a task id, nothing to wait for."""

    __slots__ = ("id", "ignored")

    def __init__(self, task_id: str) -> None:
        self.id = task_id
        self.ignored = True


# What send_task need not do for our messages: create a result backend (per thread, so per
# greenlet in the API) for results nobody reads, look for a parent task, format the arguments with
# its saferepr, or declare the queue on every publish (messages go to the default exchange, routed
# by queue name; workers declare their queues when they start).
LEAN_SEND: dict[str, Any] = {
    "ignore_result": True,
    "add_to_parent": False,
    "kwargsrepr": "{}",
    "declare": [],
    "result_cls": SentTask,
}


def cancel_key(run_id: str, task_id: str, attempt: int) -> str:
    return f"missions:cancel:{run_id}:{task_id}:{attempt}"


def batches(items: list[T], most: int) -> list[list[T]]:
    """``items`` in as few consecutive groups of at most ``most`` as can be, of sizes differing by
    one at most (9 by 8: 5 and 4, not 8 and 1)."""
    if not items:
        return []
    count = -(-len(items) // max(1, most))
    size, extra = divmod(len(items), count)
    groups, start = [], 0
    for k in range(count):
        end = start + size + (1 if k < extra else 0)
        groups.append(items[start:end])
        start = end
    return groups


class Dispatcher:
    def __init__(
        self, celery: Any, redis_client: Any, wakeups: WakeupPublisher | None = None, batch_attempts: int = 1
    ) -> None:
        self.celery = celery
        self.redis = redis_client
        self.wakeups = wakeups  # publishes from a background thread; None: publish inline
        self.batch_attempts = batch_attempts  # most attempts in one message (MISSIONS_BATCH_ATTEMPTS)

    def _send(self, name: str, args: tuple[Any, ...], producer: Any = None) -> None:
        self.celery.send_task(name, args=args, queue=TASK_QUEUE, producer=producer, argsrepr=repr(args), **LEAN_SEND)

    def send_attempts(self, run_id: str, attempts: list[tuple[str, int]], per_message: int | None = None) -> bool:
        """Send the messages of several attempts of one run in one broker round trip (a kombu
        publish batch: one Redis pipeline): messages of up to ``per_message`` attempts (by default
        ``batch_attempts``), which the thread receiving one runs one after the other while they are
        quick (``workers.execution.batches``); a message of one is ``missions.run_task``."""
        if not attempts:
            return True
        try:
            with self.celery.producer_or_acquire() as producer, producer.batch():
                for group in batches(attempts, per_message or self.batch_attempts):
                    if len(group) == 1:
                        self._send(RUN_TASK, (run_id, *group[0]), producer)
                    else:
                        self._send(RUN_TASKS, (run_id, [[task_id, attempt] for task_id, attempt in group]), producer)
            return True
        except Exception:  # the broker may be down; the tick re-sends queued attempts
            log.exception(
                "could not enqueue %d attempt(s) of run %s: %s",
                len(attempts),
                run_id,
                ", ".join(f"{t}#{a}" for t, a in attempts),
            )
            return False

    def send_assessment(self, run_id: str, task_id: str, attempt: int) -> bool:
        try:
            self._send(ASSESS_TASK, (run_id, task_id, attempt))
            return True
        except Exception:
            log.exception("could not enqueue the assessment of %s/%s", run_id, task_id)
            return False

    def send_deliveries(self, delivery_ids: list[str]) -> bool:
        """Send one message per webhook delivery, in one broker round trip; a failure is left to the
        tick, which sends due deliveries whose message went missing."""
        if not delivery_ids:
            return True
        try:
            with self.celery.producer_or_acquire() as producer, producer.batch():
                for delivery_id in delivery_ids:
                    self.celery.send_task(
                        DELIVER_WEBHOOK,
                        args=(delivery_id,),
                        queue=WEBHOOK_QUEUE,
                        producer=producer,
                        argsrepr=repr((delivery_id,)),
                        **LEAN_SEND,
                    )
            return True
        except Exception:  # the broker may be down; the tick re-sends due deliveries
            log.exception("could not enqueue %d webhook deliveries: %s", len(delivery_ids), ", ".join(delivery_ids))
            return False

    def queue_empty(self) -> bool:
        """Whether the attempts queue of the broker is empty (False when the broker cannot say)."""
        try:
            return int(self.redis.llen(TASK_QUEUE)) == 0
        except Exception:  # noqa: BLE001 - cannot say: not empty, so nothing is re-sent
            return False

    def cancel_flags(self, keys: list[tuple[str, str, int]]) -> list[bool]:
        """Which of the attempts ``(run_id, task_id, attempt)`` were told to stop (one ``MGET``)."""
        flags = self.redis.mget([cancel_key(*key) for key in keys])
        return [flag is not None for flag in flags]

    def send(self, outcome: AfterCommit, inline: Inline | None = None) -> None:
        """Carry out what a committed step asks for: cancel flags, the attempts it started (one
        broker round trip), its webhook deliveries, the wake-up of its streams, and its assessments.

        With ``inline`` (the worker thread that ran the step), the assessments run in this thread,
        and, when the step asks for none, its first started attempt is offered to the thread
        (``Inline.take``, the eager hand-off): taken, it is not sent; the thread runs it once this
        returns. Its row is committed and queued, so a thread that dies before claiming it leaves
        it to the tick's re-send of lost messages, and a late duplicate finds it claimed."""
        for cancel in outcome.cancel:
            try:
                self.redis.set(cancel_key(outcome.run_id, cancel.task_id, cancel.attempt), cancel.reason, ex=3600)
            except Exception:
                log.exception("could not signal cancel of %s/%s", outcome.run_id, cancel.task_id)
        starts = [(start.task_id, start.attempt) for start in outcome.start]
        if inline is not None and starts and not outcome.assess and inline.take(outcome.run_id, *starts[0]):
            del starts[0]
        self.send_attempts(outcome.run_id, starts)
        self.send_deliveries(outcome.deliveries)
        if outcome.last_event_id is not None:
            if self.wakeups is not None:
                self.wakeups.publish(outcome.mission_id, outcome.run_id, outcome.last_event_id)
            else:
                publish_wakeup(self.redis, outcome.mission_id, outcome.run_id, outcome.last_event_id)
        for assess in outcome.assess:
            if inline is not None:
                inline.assess(outcome.run_id, assess.task_id, assess.attempt)
            else:
                self.send_assessment(outcome.run_id, assess.task_id, assess.attempt)
