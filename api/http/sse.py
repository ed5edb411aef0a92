"""Server-Sent Events for one run: the event log replayed from Postgres, woken up by Redis.

flask-sse relays whatever reaches a Redis channel, which is at-most-once: a client that was not
subscribed at the moment of a publish never sees that event. Here Redis only says "look again";
every event a client receives is read from the ``events`` table. ``EventStream`` keeps flask-sse's
``Message`` format and publishing API and changes what a reconnecting client needs:

- it uses the process's shared Redis client instead of opening a connection per publish;
- it honours ``Last-Event-ID``: a reconnecting client gets exactly the events after the last one
  it saw, in order, none twice;
- it sends a comment line every ``sse_heartbeat_seconds`` so that proxies keep an idle stream open
  and a server notices a client that went away;
- all the streams of a process share one Redis pub/sub connection (``workers.messaging.wakeups.WakeupHub``),
  where flask-sse holds one per stream.

The order of one stream: subscribe to the mission's channel (and wait until Redis confirms it),
replay the log after the client's id, then relay: on a wake-up for this run, read the log after
the last id sent. A wake-up comes from Redis, or from the hub's read of the log once a second (the
last event id of every run with streams, one query per process) in case Redis lost one; while the
hub cannot read the log, the stream reads it itself every ``FALLBACK_POLL_SECONDS``. Because the
subscription is active before the replay query runs, an event committed after the replay is either
announced to this stream or found by the next read. The stream ends after ``mission:done``.

The streams of one run in one process share a ``RunFeed``: a wake-up makes one read of the log for
all of them (the first stream that needs the new rows reads them, the others wait for that read),
each event is formatted once, and every stream writes the events after its own last id in one
write. A stream further back than the feed holds (a replay) reads the log on its own until it
has caught up.

No pooled Postgres connection is held while the stream waits: each read takes one and returns it
before the events are written to the client. Redis and psycopg block cooperatively under gevent, so
each open stream costs one greenlet; the process holds one pub/sub connection for all of them.
"""

from __future__ import annotations

import bisect
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import flask
from flask import current_app
from flask_sse import Message, ServerSentEventsBlueprint

from workers.messaging.wakeups import WakeupHub, channel
from workers.store import events as event_log
from workers.store.db import Database
from workers.support.errors import Invalid
from workers.wiring import Services

log = logging.getLogger(__name__)

# Read the log at least this often even without a wake-up (pub/sub may drop a message) while the
# process's wake-up hub cannot read it for all streams; SAFETY_POLL_SECONDS while it can.
FALLBACK_POLL_SECONDS = 1.0
SAFETY_POLL_SECONDS = 30.0
# Sent first on every stream; browsers otherwise wait ~3 s before reconnecting.
RECONNECT_MILLISECONDS = 2000
# How long to wait for Redis to confirm the subscription before relying on polling alone.
SUBSCRIBE_CONFIRM_SECONDS = 2.0
PAGE_SIZE = 500
KEEP_ALIVE = ": keep-alive\n\n"

_EVENT_ID = re.compile(r"[0-9]{1,19}")
_MAX_EVENT_ID = 2**63 - 1  # bigserial


class EventStream(ServerSentEventsBlueprint):  # type: ignore[misc]  # (flask-sse has no types)
    """flask-sse's blueprint, streaming one run from the event log (see the module docstring)."""

    @property
    def redis(self) -> Any:
        """The process's shared client (flask-sse would open a new connection on every use)."""
        services: Services = current_app.extensions["missions"]
        return services.redis

    def stream(self) -> NoReturn:
        """The stock view relays any channel named in the query string, without replay or
        scoping to a project; a route must call ``stream_run`` instead."""
        raise NotImplementedError("EventStream has no generic view; route to stream_run(mission_id, run_id, ...)")

    def stream_run(self, mission_id: str, run_id: str, last_event_id: int | None) -> flask.Response:
        services: Services = current_app.extensions["missions"]
        if last_event_id is not None:
            with services.db.transaction() as conn:
                ended = event_log.ended_at_or_before(conn, run_id, last_event_id)
            if ended:
                # 204 is how the SSE standard tells a browser's EventSource to stop reconnecting.
                return current_app.response_class(status=204)
        frames = _frames(
            services.db,
            services.wakeup_hub,
            _feeds(),
            mission_id,
            run_id,
            after_id=last_event_id or 0,
            heartbeat_seconds=services.settings.sse_heartbeat_seconds,
        )
        response = current_app.response_class(frames, mimetype="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"  # nginx would otherwise hold events back
        return response


event_stream = EventStream("events", __name__)


def _feeds() -> RunFeeds:
    """The app's feeds (one set per process: each gunicorn worker has its own app)."""
    feeds: RunFeeds | None = current_app.extensions.get("missions_feeds")
    if feeds is None:
        feeds = current_app.extensions["missions_feeds"] = RunFeeds()
    return feeds


def stream_run(mission_id: str, run_id: str, last_event_id: int | None) -> flask.Response:
    """A ``text/event-stream`` response with the events of ``run_id`` after ``last_event_id``,
    then its live events, ending after ``mission:done`` (the latest one: a run continued after it
    failed has one per time it ended). A client whose ``last_event_id`` is at or past the run's
    latest event, a ``mission:done``, gets 204 No Content: there is nothing more to send."""
    return event_stream.stream_run(mission_id, run_id, last_event_id)


def parse_last_event_id(header_value: str | None, query_value: str | None) -> int | None:
    """The id to replay after, or None to replay the whole run.

    The ``Last-Event-ID`` header wins over the ``lastEventId`` query parameter: a browser keeps the
    page's URL when it reconnects, so the header is the more recent of the two. Empty means absent.
    """
    for name, raw in (("Last-Event-ID", header_value), ("lastEventId", query_value)):
        if raw is None or not raw.strip():
            continue
        text = raw.strip()
        if not _EVENT_ID.fullmatch(text) or int(text) > _MAX_EVENT_ID:
            message = f"{name} must be the id of a received event (a whole number, 0 or more), got {raw[:40]!r}"
            raise Invalid(message, {"fields": {name: [message]}})
        return int(text)
    return None


class RunFeed:
    """The tail of one run's event log as this process last read it, shared by the run's streams.

    N streams of one run woken by one wake-up make one read of the log, not N: the first stream that
    needs events the feed does not hold reads them (after the feed's ``head``, the last id it has
    read) while the others wait for that read, then every stream takes the events after its own
    last id from the feed. Each event is formatted once, for all of them.

    The feed holds every event of the run with an id in ``(floor, head]``, at most ``KEEP_FRAMES``
    of them (the oldest are dropped first, raising ``floor``). A replay is read by its stream on
    its own, page by page (a replay of a long run is never held in memory whole), and the first
    stream whose replay has caught up seeds the feed with its last page (``seed``). A stream whose
    last id is below ``floor``, or that comes before the feed is seeded, reads on its own.

    ``events_after(after_id, announced)`` returns without a read when the feed already holds the
    announced id; otherwise (or when nothing was announced: a poll) it waits for a read that
    starts after the call, so an event committed before the call is never missed. A read that
    fails wakes the waiters, and the next of them reads again (and meets the same failure, as a
    stream reading on its own would)."""

    KEEP_FRAMES = 2 * PAGE_SIZE

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.followers = 0  # streams of this process on the run (``RunFeeds`` drops the feed at 0)
        self._changed = threading.Condition()
        self._ids: list[int] = []
        self._frames: list[Frame] = []
        self._floor = 0
        self._head: int | None = None  # None: nothing read yet
        self._reading = False
        self._reads_started = self._reads_done = 0
        self.reads = 0  # reads of the log made for the feed (pages)

    def events_after(self, db: Database, after_id: int, announced: int | None) -> list[Frame] | None:
        """The frames after ``after_id``, oldest first, complete up to a read of the log that
        started after this call (or that found ``announced``); None when ``after_id`` is older
        than what the feed holds (the caller reads the log itself)."""
        with self._changed:
            wanted = self._reads_started + 1  # a read that starts from now on
            while True:
                if self._head is None or after_id < self._floor:
                    return None
                if self._reads_done >= wanted or (announced is not None and announced <= self._head):
                    return self._frames[bisect.bisect_right(self._ids, after_id) :]
                if not self._reading:
                    break
                self._changed.wait()
            self._reading = True
            self._reads_started += 1
            start = self._head
        try:
            read = _read_all(db, self.run_id, start)
        except BaseException:
            with self._changed:  # the next waiter reads again
                self._reading = False
                self._changed.notify_all()
            raise
        with self._changed:
            self._reading = False
            self.reads += 1
            self._append(start, read)
            self._changed.notify_all()
            if after_id < self._floor:
                return None
            return self._frames[bisect.bisect_right(self._ids, after_id) :]

    def seed(self, after_id: int, page: list[Frame]) -> None:
        """A stream read every event after ``after_id`` there was (``page``, the last page of its
        replay): that is where the feed starts, unless another stream seeded it first."""
        with self._changed:
            if self._head is None:
                self._floor = after_id
                self._append(after_id, page)

    def _append(self, start: int, read: list[Frame]) -> None:
        self._ids += [frame.id for frame in read]
        self._frames += read
        self._head = self._ids[-1] if self._ids else start
        self._reads_done = self._reads_started
        extra = len(self._frames) - self.KEEP_FRAMES
        if extra > 0:
            self._floor = self._ids[extra - 1]
            del self._ids[:extra], self._frames[:extra]


class RunFeeds:
    """The process's ``RunFeed``s, one per run that has streams here."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._feeds: dict[str, RunFeed] = {}

    def join(self, run_id: str) -> RunFeed:
        with self._lock:
            feed = self._feeds.get(run_id)
            if feed is None:
                feed = self._feeds[run_id] = RunFeed(run_id)
            feed.followers += 1
            return feed

    def leave(self, feed: RunFeed) -> None:
        with self._lock:
            feed.followers -= 1
            if feed.followers <= 0 and self._feeds.get(feed.run_id) is feed:
                del self._feeds[feed.run_id]

    def __len__(self) -> int:
        return len(self._feeds)


@dataclass(frozen=True)
class Frame:
    """One event as it goes on the wire."""

    id: int
    done: bool  # the run's ``mission:done``: the stream ends after it
    text: str


def _read_all(db: Database, run_id: str, after_id: int) -> list[Frame]:
    """Every event of ``run_id`` after ``after_id`` (in pages), formatted."""
    frames: list[Frame] = []
    while True:
        with db.transaction() as conn:
            page = event_log.fetch_events(conn, run_id, after_id, PAGE_SIZE)
        frames += [_frame(event) for event in page]
        if len(page) < PAGE_SIZE:
            return frames
        after_id = page[-1].id


def _frames(
    db: Database,
    hub: WakeupHub,
    feeds: RunFeeds,
    mission_id: str,
    run_id: str,
    *,
    after_id: int,
    heartbeat_seconds: float,
) -> Iterator[str]:
    # Subscribed (or given up on Redis after SUBSCRIBE_CONFIRM_SECONDS) before the replay below.
    wakeups = hub.listen(channel(mission_id), run_id, SUBSCRIBE_CONFIRM_SECONDS)
    feed = feeds.join(run_id)
    try:
        yield f"retry: {RECONNECT_MILLISECONDS}\n\n"
        last_id = after_id
        last_sent = last_read = time.monotonic()
        read_due, announced = True, None  # the replay
        while True:
            if read_due:
                last_read = time.monotonic()
                last_done = False
                while True:
                    # No pooled connection is held past a read, so a slow client holds up no one.
                    fresh = feed.events_after(db, last_id, announced)
                    own = fresh is None
                    if fresh is None:  # a replay, or behind what the feed holds: a page on its own
                        with db.transaction() as conn:
                            page = event_log.fetch_events(conn, run_id, last_id, PAGE_SIZE)
                        fresh = [_frame(event) for event in page]
                        if len(fresh) < PAGE_SIZE:  # caught up: what it read may start the feed
                            feed.seed(last_id, fresh)
                    if fresh:
                        yield "".join(frame.text for frame in fresh)
                        last_id, last_done = fresh[-1].id, fresh[-1].done
                        last_sent = time.monotonic()
                    # The feed's answer is complete; a page of its own may have a next one.
                    if not own or len(fresh) < PAGE_SIZE:
                        # A run an operator continued after it failed has a mission:done before
                        # its later events: the stream ends at the one that is the latest.
                        if last_done:
                            return
                        break
            now = time.monotonic()
            if now - last_sent >= heartbeat_seconds:
                yield KEEP_ALIVE
                last_sent = now = time.monotonic()
            # The hub reads the log for every stream of the process; this stream reads it on its
            # own only while the hub cannot (and, as a last resort, every SAFETY_POLL_SECONDS).
            poll = SAFETY_POLL_SECONDS if hub.covered() else FALLBACK_POLL_SECONDS
            timeout = min(
                poll,
                heartbeat_seconds,
                last_sent + heartbeat_seconds - now,
                last_read + poll - now,
            )
            woken, announced = wakeups.wait_for(max(0.0, timeout), after_id=last_id)
            if wakeups.released:
                return  # the process is stopping; the client reconnects after what it has seen
            read_due = woken or time.monotonic() - last_read >= poll
            if not woken:
                announced = None
    finally:
        feeds.leave(feed)
        wakeups.close()


def _frame(event: event_log.StoredEvent) -> Frame:
    return Frame(event.id, event.type == event_log.MISSION_DONE, _format(event))


def _format(event: event_log.StoredEvent) -> str:
    # Serialised here with ASCII escapes: flask-sse splits data with str.splitlines(), which would
    # also break a line at U+2028 and similar characters left raw inside a JSON string.
    return str(Message(json.dumps(event.data), type=event.type, id=event.id))
