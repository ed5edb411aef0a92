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

No pooled Postgres connection is held while the stream waits: each read takes one and returns it
before the events are written to the client. Redis and psycopg block cooperatively under gevent, so
each open stream costs one greenlet; the process holds one pub/sub connection for all of them.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
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


def _frames(
    db: Database,
    hub: WakeupHub,
    mission_id: str,
    run_id: str,
    *,
    after_id: int,
    heartbeat_seconds: float,
) -> Iterator[str]:
    # Subscribed (or given up on Redis after SUBSCRIBE_CONFIRM_SECONDS) before the replay below.
    wakeups = hub.listen(channel(mission_id), run_id, SUBSCRIBE_CONFIRM_SECONDS)
    try:
        yield f"retry: {RECONNECT_MILLISECONDS}\n\n"
        last_id = after_id
        last_sent = last_read = time.monotonic()
        read_due = True  # the replay
        while True:
            if read_due:
                last_read = time.monotonic()
                last_type = None
                while True:
                    with db.transaction() as conn:
                        page = event_log.fetch_events(conn, run_id, last_id, PAGE_SIZE)
                    # The connection is back in the pool before a slow client can hold us up.
                    for event in page:
                        yield _format(event)
                        last_id, last_type = event.id, event.type
                    if page:
                        last_sent = time.monotonic()
                    if len(page) < PAGE_SIZE:
                        # A run an operator continued after it failed has a mission:done before
                        # its later events: the stream ends at the one that is the latest.
                        if last_type == event_log.MISSION_DONE:
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
            woken = wakeups.wait(max(0.0, timeout), after_id=last_id)
            if wakeups.released:
                return  # the process is stopping; the client reconnects after what it has seen
            read_due = woken or time.monotonic() - last_read >= poll
    finally:
        wakeups.close()


def _format(event: event_log.StoredEvent) -> str:
    # Serialised here with ASCII escapes: flask-sse splits data with str.splitlines(), which would
    # also break a line at U+2028 and similar characters left raw inside a JSON string.
    return str(Message(json.dumps(event.data), type=event.type, id=event.id))
