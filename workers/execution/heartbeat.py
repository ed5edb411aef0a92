"""Heart-beating and cancellation watching for every attempt a worker process is running.

One daemon thread per process (not one per attempt) wakes every ``poll`` seconds and, for all the
attempts registered with it:

- reads their cancel flags with one Redis ``MGET`` and sets ``cancelled`` on those that have one;
- every ``interval`` seconds per attempt, writes ``heartbeat_at`` for all attempts due in one
  ``UPDATE`` that also checks each row is still in the status the worker holds it in; an attempt
  whose row moved on (cancelled by an abort, reaped as lost) is cancelled too.

Starting an attempt therefore costs a dict insert instead of a thread start and join, and a worker
running hundreds of long agent calls beats them with one statement. The same thread makes the
deferred calls an attempt asks for (``after``): announcing a claim the attempt has not yet
announced by itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from workers.store import attempts
from workers.store.db import Database

log = logging.getLogger(__name__)

Key = tuple[str, str, int]


@dataclass(eq=False)
class Watch:
    """One attempt being watched; ``cancelled`` is set once it must stop."""

    run_id: str
    task_id: str
    attempt: int
    status: str
    next_beat: float
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Called once by the watcher thread when ``due_at`` (monotonic) has passed, unless cancelled.
    due_at: float | None = None
    on_due: Callable[[], None] | None = None

    @property
    def key(self) -> Key:
        return (self.run_id, self.task_id, self.attempt)


class Heartbeats:
    """The process-wide watcher. ``watch(...)`` is a context manager yielding the ``Watch``."""

    def __init__(
        self, db: Database, cancel_flags: Callable[[list[Key]], list[bool]], interval: float, poll: float = 0.2
    ) -> None:
        """``cancel_flags(keys)`` says which attempts were told to stop (``Dispatcher.cancel_flags``)."""
        self.db, self.cancel_flags, self.interval, self.poll = db, cancel_flags, interval, poll
        self._watches: dict[int, Watch] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(
        self,
        run_id: str,
        task_id: str,
        attempt: int,
        status: str,
        after: tuple[float, Callable[[], None]] | None = None,
    ) -> Iterator[Watch]:
        """Watch an attempt while the block runs; ``after=(seconds, call)`` has the watcher thread
        make ``call`` once if the attempt is still watched that many seconds from now."""
        started = time.monotonic()
        item = Watch(run_id, task_id, attempt, status, started + self.interval)
        if after is not None:
            item.due_at, item.on_due = started + after[0], after[1]
        with self._lock:
            idle = not self._watches  # (the watcher thread waits only while nothing is watched)
            self._watches[id(item)] = item
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="heartbeats", daemon=True)
                self._thread.start()
            elif idle:
                self._wake.notify()
        try:
            yield item
        finally:
            with self._lock:
                self._watches.pop(id(item), None)

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._watches:
                    self._wake.wait()
            time.sleep(self.poll)
            with self._lock:
                watches = [w for w in self._watches.values() if not w.cancelled.is_set()]
            if watches:
                self.check(watches, time.monotonic())

    def check(self, watches: list[Watch], now: float) -> None:
        """One round: the calls that are due, the cancel flags of all ``watches``, then the
        heartbeat of those due at ``now``."""
        for w in watches:
            if w.on_due is not None and w.due_at is not None and w.due_at <= now and not w.cancelled.is_set():
                call, w.on_due = w.on_due, None
                try:
                    call()
                except Exception:
                    log.warning(
                        "the deferred call of attempt %s of %s/%s failed", w.attempt, w.run_id, w.task_id, exc_info=True
                    )
        try:
            flags = self.cancel_flags([w.key for w in watches])
        except Exception:
            log.warning("cancel flags unreadable for %d attempts", len(watches), exc_info=True)
        else:
            for w, flag in zip(watches, flags, strict=True):
                if flag:
                    w.cancelled.set()
        due = [w for w in watches if not w.cancelled.is_set() and w.next_beat <= now]
        if not due:
            return
        watched = [{"run_id": w.run_id, "task_id": w.task_id, "attempt": w.attempt, "status": w.status} for w in due]
        try:
            with self.db.transaction() as conn:
                alive = attempts.beat(conn, watched)
        except Exception:
            log.warning("heartbeat of %d attempts failed", len(due), exc_info=True)
            return
        for w in due:
            w.next_beat = now + self.interval
            if w.key not in alive:
                w.cancelled.set()
