"""The Redis wake-up that tells relays to read the event log (``workers.store.events``).

Postgres holds every event; Redis pub/sub only says "run R has something new" and may lose that
message (pub/sub is at-most-once, and a publish that fails is logged, never raised). A relay that
missed a wake-up still finds the event by reading the log again, so no event depends on Redis.

The writer appends a run's events while holding the lock on that run's row, so within one run the
``id`` order is the commit order: an event with a smaller id is always visible before one with a
larger id. Reading ``id > last_id`` therefore never skips an event that commits later.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from workers.store.db import is_transient
from workers.support import metrics

log = logging.getLogger(__name__)


def channel(mission_id: str) -> str:
    """The pub/sub channel that carries the wake-ups of every run of one mission."""
    return f"mission:{mission_id}"


def publish_wakeup(client: redis.Redis, mission_id: str, run_id: str, event_id: int) -> None:
    """Tell relays of ``mission_id`` that ``run_id`` has events up to ``event_id``.

    Call it only after the transaction that wrote the events committed. A Redis failure is logged
    and swallowed: the events are already safe in Postgres and relays poll for them anyway.
    """
    message = json.dumps({"runId": run_id, "eventId": event_id})
    try:
        client.publish(channel(mission_id), message)
    except redis.RedisError:
        log.warning(
            "could not publish the wake-up for run %s event %s; relays will poll", run_id, event_id, exc_info=True
        )


WAKEUP_INTERVAL = 0.02  # seconds between two sends of one publisher while steps keep coming


class WakeupPublisher:
    """Publishes wake-ups from one background thread, so a coordinator step never waits on Redis.

    ``publish`` only records "run R has events up to N" and returns. The thread sends what is
    pending as soon as it is idle, all of it in one pipeline, and one wake-up per run (the highest
    event id) however many steps of that run committed meanwhile: a relay that wakes reads every
    event after its last id from Postgres anyway. When idle it sends at once, so a lone step's
    wake-up is not delayed; while steps keep coming it sends at most once per ``min_interval``
    (a wake-up waits up to that long), so the batches grow and each wake-up costs less.

    Like ``publish_wakeup``, a failure is logged and the wake-ups are dropped: relays poll.
    """

    def __init__(self, client: redis.Redis, min_interval: float = WAKEUP_INTERVAL) -> None:
        self.client = client
        self.min_interval = min_interval
        self._pending: dict[str, tuple[str, int]] = {}  # run id -> (mission id, highest event id)
        self._sending = False
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self.sent = 0  # wake-ups published so far (after coalescing)

    def publish(self, mission_id: str, run_id: str, event_id: int) -> None:
        with self._lock:
            known = self._pending.get(run_id)
            if known is None or known[1] < event_id:
                self._pending[run_id] = (mission_id, event_id)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="wakeups", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything published so far has been sent (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending or self._sending:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._changed.wait(left)
        return True

    def _loop(self) -> None:
        last = float("-inf")
        while True:
            with self._lock:
                while not self._pending:
                    self._changed.wait()
            # Busy: let the next wake-ups gather for the rest of the interval (an idle publisher
            # sends at once). This bounds the publishing cost per process, not the event delivery.
            rest = last + self.min_interval - time.monotonic()
            if rest > 0:
                time.sleep(rest)
            with self._lock:
                batch, self._pending, self._sending = self._pending, {}, True
            last = time.monotonic()
            try:
                self._send(batch)
            finally:
                with self._lock:
                    self._sending = False
                    self._changed.notify_all()

    def _send(self, batch: dict[str, tuple[str, int]]) -> None:
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for run_id, (mission_id, event_id) in batch.items():
                    pipe.publish(channel(mission_id), json.dumps({"runId": run_id, "eventId": event_id}))
                pipe.execute()
            self.sent += len(batch)
        except Exception:
            log.warning("could not publish %d wake-up(s); relays will poll", len(batch), exc_info=True)


HUB_POLL_SECONDS = 0.05  # how long the hub reads before it looks at new (un)subscriptions
HUB_RETRY_SECONDS = 1.0  # pause before the hub reconnects after a Redis failure
HUB_LOG_POLL_SECONDS = 1.0  # how often the hub reads the last event id of every run it has streams for
HUB_UNREADABLE_SECONDS = 30.0  # how long the hub leaves out of its reads a run whose read failed on its own


class Listener:
    """One stream's interest in the wake-ups of one run (see ``WakeupHub``)."""

    def __init__(self, hub: WakeupHub, channel: str, run_id: str) -> None:
        self.hub, self.channel, self.run_id = hub, channel, run_id
        self.confirmed = threading.Event()  # the hub's subscription to the channel is live
        self._woken = threading.Event()
        self._lock = threading.Lock()
        self._latest: int | None = 0  # the highest event id announced; None: an unreadable wake-up
        self._after = 0  # the last event id the stream said it has sent
        self.released = False  # the process is stopping: the stream should end (its client reconnects)

    def release(self) -> None:
        self.released = True
        self._woken.set()

    def announce(self, event_id: int | None) -> None:
        with self._lock:
            if event_id is not None and event_id <= self._after:
                return  # nothing this stream has not sent
            if event_id is None or self._latest is None:
                self._latest = None
            else:
                self._latest = max(self._latest, event_id)
            self._woken.set()

    def wait(self, timeout: float, *, after_id: int) -> bool:
        """Wait up to ``timeout`` seconds; True when a wake-up may announce an event after ``after_id``."""
        return self.wait_for(timeout, after_id=after_id)[0]

    def wait_for(self, timeout: float, *, after_id: int) -> tuple[bool, int | None]:
        """``wait``, and the highest event id announced meanwhile (None when a wake-up did not say,
        or none came): a reader that already holds that id need not read the log again."""
        with self._lock:
            self._after = max(self._after, after_id)
        if not self._woken.wait(timeout):
            return False, None
        with self._lock:  # cleared before the caller reads the log: a later wake-up sets it again
            self._woken.clear()
            latest, self._latest = self._latest, 0
        return latest is None or latest > after_id, latest

    def close(self) -> None:
        self.hub.leave(self)


class WakeupHub:
    """The wake-ups of every stream of one process, received on one Redis pub/sub connection.

    A stream ``listen``s to its run: the hub subscribes to the mission's channel when the first
    stream of that mission arrives (``listen`` returns once Redis confirmed it, so a replay that
    follows cannot miss a wake-up) and unsubscribes when the last one leaves. One background thread
    (a greenlet under gevent) owns the connection: it reads for ``HUB_POLL_SECONDS`` at a time and
    between reads sends the (un)subscriptions that streams asked for, so the connection is never
    used by two threads. Each wake-up is parsed once and handed to the streams of its run.

    Pub/sub is at-most-once, so the hub also reads the log for the wake-ups it missed: every
    ``HUB_LOG_POLL_SECONDS`` it reads the last event id of every run it has streams for, in one
    query (``latest_ids``), and wakes the streams that have not sent it. That is one query per
    process, where each stream used to poll on its own; a stream polls itself (every second)
    only while the hub's reads fail (``covered`` is False).

    When Redis fails, the hub drops the connection, waits ``HUB_RETRY_SECONDS``, reconnects and
    subscribes again to every channel that still has streams; meanwhile its log reads keep the
    streams going, a second late at most.

    One run never stops the others: handing a wake-up or a read to one stream, handling one
    message, and reading the log are each guarded (logged, counted in
    ``missions_isolated_failures_total{part="wakeup_hub"}``, skipped), and the thread outlives any
    of them. When a read of several runs fails for a reason other than a database outage, the hub
    splits it in halves until it finds the runs whose read fails on its own; those are left out of
    its reads for ``HUB_UNREADABLE_SECONDS`` and their streams are woken at every read instead, so
    they read the log themselves (as streams do while the hub cannot), and the other runs' streams
    stay covered."""

    def __init__(
        self,
        client: redis.Redis,
        latest_ids: Callable[[list[str]], dict[str, int]] | None = None,
        *,
        poll_seconds: float = HUB_POLL_SECONDS,
        retry_seconds: float = HUB_RETRY_SECONDS,
        log_poll_seconds: float | None = None,
    ) -> None:
        self.client = client
        self.poll_seconds, self.retry_seconds = poll_seconds, retry_seconds
        self.latest_ids = latest_ids
        self.log_poll_seconds = HUB_LOG_POLL_SECONDS if log_poll_seconds is None else log_poll_seconds
        self._log_read_at = float("-inf")  # when the hub last read the log (monotonic)
        self._log_due = float("-inf")
        self._log_failing = False
        self._unreadable: dict[str, float] = {}  # run id -> until when (monotonic) its reads are left out
        self._lock = threading.Lock()
        self._work = threading.Event()  # something to subscribe or unsubscribe
        self._listeners: dict[str, set[Listener]] = {}
        self._todo: set[str] = set()  # channels whose subscription may have to change
        self._subscribed: set[str] = set()  # SUBSCRIBE sent, no UNSUBSCRIBE since
        self._confirmed: set[str] = set()  # ... and Redis confirmed it
        self._thread: threading.Thread | None = None
        self._closed = False
        self._releasing = False
        self.connects = 0  # pub/sub connections opened so far (one per busy period, more after failures)

    def listen(self, channel: str, run_id: str, confirm_timeout: float) -> Listener:
        """Wake-ups for ``run_id`` on ``channel``; waits up to ``confirm_timeout`` seconds for the
        subscription (``Listener.confirmed`` tells whether it came)."""
        listener = Listener(self, channel, run_id)
        if self._releasing:
            listener.release()
        with self._lock:
            self._listeners.setdefault(channel, set()).add(listener)
            if channel in self._confirmed:
                listener.confirmed.set()
            else:
                self._todo.add(channel)
            if not self._closed and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._loop, name="wakeup-hub", daemon=True)
                self._thread.start()
        self._work.set()
        if not listener.confirmed.wait(confirm_timeout):
            log.warning("Redis did not confirm the subscription to %s; the stream relies on polling", channel)
        return listener

    def release_all(self) -> None:
        """Wake every stream of the process with ``released`` set (the process is stopping): each ends
        now, and its client reconnects, with ``Last-Event-ID``, to a process that serves."""
        with self._lock:
            self._releasing = True
            listeners = [listener for group in self._listeners.values() for listener in group]
        for listener in listeners:
            listener.release()

    def leave(self, listener: Listener) -> None:
        with self._lock:
            listeners = self._listeners.get(listener.channel)
            if listeners is None or listener not in listeners:
                return
            listeners.discard(listener)
            if not listeners:
                del self._listeners[listener.channel]
                self._todo.add(listener.channel)
        self._work.set()

    def covered(self) -> bool:
        """Whether the hub's reads of the log are current, so that a stream need not poll it."""
        return self.latest_ids is not None and time.monotonic() - self._log_read_at <= 2 * self.log_poll_seconds + 1

    def channels(self) -> set[str]:
        """The channels Redis confirmed and the hub has not left."""
        with self._lock:
            return set(self._confirmed)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._work.set()
        if self._thread is not None:
            self._thread.join(2)

    def _loop(self) -> None:
        pubsub: Any = None
        failing = False
        while True:
            with self._lock:
                if self._closed:
                    break
            try:
                self._read_log()
            except Exception:  # the thread must outlive any failure of one read
                log.exception("the wake-up hub's read of the event log failed; skipped")
                metrics.count_isolated("wakeup_hub")
            try:
                if pubsub is None:
                    pubsub = self.client.pubsub(ignore_subscribe_messages=False)  # type: ignore[no-untyped-call]
                    self.connects += 1
                self._sync(pubsub)
                if not self._subscribed:
                    pubsub.close()  # nothing to hear: no connection held while no stream is open
                    pubsub, failing = None, False
                    self._work.wait()
                    continue
                message = pubsub.get_message(timeout=self.poll_seconds)
                while message is not None:
                    self._handle_guarded(message)
                    message = pubsub.get_message(timeout=0)
            except Exception:
                if not failing:  # once per outage, not once per retry
                    log.warning("the wake-up hub lost Redis; streams poll until it is back", exc_info=True)
                failing = True
                pubsub = self._reset(pubsub)
                self._work.wait(min(self.retry_seconds, self.log_poll_seconds))
                continue
            if failing:
                log.warning("the wake-up hub reached Redis again")
                failing = False
        if pubsub is not None:
            self._reset(pubsub)

    def _read_log(self) -> None:
        """Every ``log_poll_seconds``: wake the streams whose run has events they have not sent."""
        now = time.monotonic()
        if self.latest_ids is None or now < self._log_due:
            return
        self._log_due = now + self.log_poll_seconds
        with self._lock:
            listeners = [listener for group in self._listeners.values() for listener in group]
        if not listeners:
            return
        runs = {listener.run_id for listener in listeners}
        self._unreadable = {run: until for run, until in self._unreadable.items() if until > now and run in runs}
        readable = sorted(runs - self._unreadable.keys())
        latest: dict[str, int] = {}
        if readable:
            try:
                latest = self.latest_ids(readable)
            except Exception as exc:
                if is_transient(exc) or len(readable) == 1 or not self._isolate(readable, latest):
                    if not self._log_failing:
                        log.warning("the wake-up hub cannot read the event log; each stream polls it", exc_info=True)
                    self._log_failing = True
                    return
        else:  # every run's read fails on its own: the streams read the log themselves
            self._log_failing = True
            return
        self._log_failing = False
        self._log_read_at = time.monotonic()
        for listener in listeners:
            if listener.run_id in self._unreadable:
                self._announce(listener, None)  # its stream reads the log itself
            elif listener.run_id in latest:
                self._announce(listener, latest[listener.run_id])

    def _isolate(self, runs: list[str], latest: dict[str, int]) -> bool:
        """After a read of ``runs`` failed: read them again in halves, down to the runs whose read
        fails on its own, into ``latest``; those are left out of the next reads for a while. False
        when no read succeeded (nothing to isolate: the log cannot be read)."""
        assert self.latest_ids is not None
        failed: list[str] = []
        read_any = False
        pending = [runs[: len(runs) // 2], runs[len(runs) // 2 :]]
        while pending:
            part = pending.pop()
            try:
                latest.update(self.latest_ids(part))
                read_any = True
            except Exception as exc:  # noqa: BLE001 - logged below, once per run whose read fails
                if is_transient(exc):
                    return False  # the database went away meanwhile
                if len(part) == 1:
                    failed.extend(part)
                else:
                    pending += [part[: len(part) // 2], part[len(part) // 2 :]]
        if not read_any:
            return False
        until = time.monotonic() + HUB_UNREADABLE_SECONDS
        for run_id in failed:
            log.warning("the wake-up hub cannot read the event log of run %s; its streams read it themselves", run_id)
            metrics.count_isolated("wakeup_hub")
            self._unreadable[run_id] = until
        return True

    def _announce(self, listener: Listener, event_id: int | None) -> None:
        try:
            listener.announce(event_id)
        except Exception:  # one stream must not keep the others from their wake-ups
            log.exception("the wake-up hub could not wake a stream of run %s; skipped", listener.run_id)
            metrics.count_isolated("wakeup_hub")

    def _handle_guarded(self, message: Any) -> None:
        """``_handle`` one message; one that cannot be handled is skipped, not taken for a Redis
        failure (which would drop the connection and the messages after it)."""
        try:
            self._handle(message)
        except Exception:
            log.exception("the wake-up hub could not handle a message on %r; skipped", _field(message, "channel"))
            metrics.count_isolated("wakeup_hub")

    def _sync(self, pubsub: Any) -> None:
        self._work.clear()
        with self._lock:
            todo, self._todo = self._todo, set()
            subscribe = [c for c in todo if c in self._listeners and c not in self._subscribed]
            unsubscribe = [c for c in todo if c not in self._listeners and c in self._subscribed]
            self._subscribed.update(subscribe)
            self._subscribed.difference_update(unsubscribe)
            self._confirmed.difference_update(unsubscribe)
        if subscribe:
            pubsub.subscribe(*subscribe)
        if unsubscribe:
            pubsub.unsubscribe(*unsubscribe)

    def _handle(self, message: dict[str, Any]) -> None:
        kind, name = message["type"], message["channel"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        if kind == "subscribe":
            with self._lock:
                if name not in self._subscribed:
                    return  # left again before Redis confirmed it
                self._confirmed.add(name)
                listeners = list(self._listeners.get(name, ()))
            for listener in listeners:
                listener.confirmed.set()
        elif kind == "message":  # (each stream's wake-up on its own: see _announce)
            try:
                payload = json.loads(message["data"])
                run_id, event_id = str(payload["runId"]), payload["eventId"]
                event_id = event_id if isinstance(event_id, int) else None
            except (ValueError, TypeError, KeyError):
                run_id, event_id = None, None  # unreadable: every stream of the mission reads once more
            with self._lock:
                listeners = list(self._listeners.get(name, ()))
            for listener in listeners:
                if run_id is None or listener.run_id == run_id:
                    self._announce(listener, event_id if run_id is not None else None)

    def _reset(self, pubsub: Any) -> Any:
        """Forget the connection; every channel that still has streams is subscribed again."""
        try:
            if pubsub is not None:
                pubsub.close()
        except Exception:  # noqa: BLE001 - the hub must outlive any failure of one read
            pass
        with self._lock:
            self._subscribed.clear()
            self._confirmed.clear()
            self._todo.update(self._listeners)
        return None


def _field(message: Any, name: str) -> Any:
    try:
        return message[name]
    except Exception:  # noqa: BLE001 - only for a log line about a message that is already broken
        return None
