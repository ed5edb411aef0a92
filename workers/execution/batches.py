"""Attempts that arrived in one message, run one after the other by the thread that received it.

When a step (or ``POST /execute``) starts several attempts of one run at once, the dispatcher sends
them in messages of up to ``MISSIONS_BATCH_ATTEMPTS`` (``workers.messaging.dispatch``). Celery's
cost of a message (the consumer's receive, its unacked bookkeeping, the tracer, the ack) is then
paid once for several quick attempts instead of once for each; it is most of what a worker spends
on a no-op attempt.

Parallelism is kept by a time bound, not given up: a ``Batch`` holds the attempts its thread has not
started yet, and the process's ``Releaser`` sends them on, one message each (so they spread over
the idle threads and workers), as soon as the thread has not taken one for
``MISSIONS_BATCH_RELEASE_SECONDS``: its current attempt is slow (a model call), so its siblings
should not wait for it. Quick attempts therefore run back to back on one thread; slow ones run in
parallel, each started at most that long later than one message each would have started it. A
worker that begins a warm shutdown releases every batch at once.

Nothing is weaker than with one message per attempt: every attempt row is committed (``queued``)
before its message is sent, and each is claimed on its own right before it runs, so a duplicate (a
released attempt, a redelivered message) finds it claimed, and attempts of a thread that died are
sent again by the tick after ``MISSIONS_REQUEUE_SECONDS`` (or the broker redelivers the
unacknowledged message).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from workers.support import tracing

log = logging.getLogger(__name__)

Item = tuple[str, int]  # (task_id, attempt) of the batch's run


class Batch:
    """The attempts of one delivered message that its thread has not started yet. ``take`` (the
    thread) and ``release`` (the releaser) each get an item at most once."""

    def __init__(self, run_id: str, items: Iterable[Item], now: float) -> None:
        self.run_id = run_id
        self._pending: deque[Item] = deque(items)
        self._lock = threading.Lock()
        self.taken_at = now  # time.monotonic() when the thread last took an attempt (or the batch came)
        # The trace context of the message's execution: what is released is sent in it (the run's
        # trace) from the releaser's thread. None while tracing is off.
        self.trace: Any = tracing.capture()

    def take(self, now: float) -> Item | None:
        """The next attempt for the thread to run, or None when none is left (or they were released)."""
        with self._lock:
            if not self._pending:
                return None
            self.taken_at = now
            return self._pending.popleft()

    def release(self) -> list[Item]:
        """Everything not taken yet, which the thread will no longer run."""
        with self._lock:
            rest = list(self._pending)
            self._pending.clear()
            return rest


class Releaser:
    """The process's watcher of batches: a batch whose thread has not taken an attempt for
    ``window`` seconds has its rest sent with ``send(run_id, items)`` (which logs its own failures,
    as the tick re-sends what was not sent). One daemon thread, started with the first batch, which
    sleeps until the earliest moment a batch could be due."""

    def __init__(self, window: float, send: Callable[[str, list[Item]], object]) -> None:
        self.window, self.send = window, send
        self._batches: set[Batch] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.released = 0  # attempts sent on so far (for tests and the log)

    def add(self, batch: Batch) -> None:
        with self._cond:
            if self._stopping:
                release_now = True
            else:
                release_now = False
                self._batches.add(batch)
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._loop, name="batch-releaser", daemon=True)
                    self._thread.start()
                self._cond.notify()
        if release_now:
            self._send(batch)

    def discard(self, batch: Batch) -> None:
        with self._cond:
            self._batches.discard(batch)

    def release_all(self) -> None:
        """The worker is shutting down: every batch's rest goes to the broker now, and later
        batches as soon as they come (a warm shutdown then waits only for the attempts running)."""
        with self._cond:
            self._stopping = True
            batches, self._batches = list(self._batches), set()
        for batch in batches:
            self._send(batch)

    def due(self, now: float) -> list[Batch]:
        """Take out the batches that are due at ``now`` (their thread took nothing for the window)."""
        with self._cond:
            due = [b for b in self._batches if now - b.taken_at >= self.window]
            self._batches.difference_update(due)
            return due

    def _loop(self) -> None:
        while True:
            for batch in self.due(time.monotonic()):
                self._send(batch)
            with self._cond:
                if not self._batches:
                    self._cond.wait()
                    continue
                wake_at = min(b.taken_at for b in self._batches) + self.window
                self._cond.wait(max(0.001, wake_at - time.monotonic()))

    def _send(self, batch: Batch) -> None:
        rest = batch.release()
        if not rest:
            return
        self.released += len(rest)
        try:
            with tracing.restored(batch.trace):
                self.send(batch.run_id, rest)
        except Exception:  # the tick re-sends queued attempts whose message never went
            log.exception("could not send on %d attempt(s) of run %s", len(rest), batch.run_id)
