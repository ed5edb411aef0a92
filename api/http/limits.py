"""Limits of the HTTP server: gunicorn's on what precedes a request's body (``api.http.server``
sets them; the OpenAPI document states them; the body's own limit is ``MISSIONS_MAX_BODY_BYTES``),
and the cap on open event streams per API key (``open_stream``). Request rates are
``api.http.ratelimit``'s."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Response, current_app, g

from api.http.errors import error_response
from workers.messaging.streams import Slot
from workers.wiring import Services

LIMIT_REQUEST_LINE = 4094  # bytes of "METHOD /path?query HTTP/1.1": 414 past it
LIMIT_REQUEST_FIELDS = 100  # headers: 431 past it
LIMIT_REQUEST_FIELD_SIZE = 8190  # bytes of one header line: 431 past it


# -- Open event streams per API key ---------------------------------------------------------------
# (The count lives in Redis, shared by every API process: workers.messaging.streams.)

STREAMS_RETRY_AFTER = 5  # seconds a client refused a stream is told to wait


def open_stream(start: Callable[[], Response]) -> Response:
    """The event stream ``start`` makes, if the request's key holds fewer than
    ``MISSIONS_MAX_STREAMS_PER_KEY`` open streams; else a 429 ``rate_limited`` before ``start``
    runs (so a refused ``execute`` starts no run). The stream keeps its slot while it sends and
    gives it back when it closes; Redis being down lets it through uncounted."""
    services: Services = current_app.extensions["missions"]
    limit = services.settings.max_streams_per_key
    slot = services.stream_slots.acquire(g.identity.key_id, limit)
    if slot is None:
        response = error_response(
            429,
            f"this API key already holds {limit} open event streams (MISSIONS_MAX_STREAMS_PER_KEY); "
            "close one or send the request again later",
            {"openStreams": limit, "limit": limit},
        )
        response.headers["Retry-After"] = str(STREAMS_RETRY_AFTER)
        return response
    try:
        response = start()
    except BaseException:
        slot.release()
        raise
    if not response.is_streamed:  # (204: nothing left to stream)
        slot.release()
        return response
    response.response = _refreshing(slot, response.response)
    response.call_on_close(slot.release)
    return response


def _refreshing(slot: Slot, chunks: Iterable[Any]) -> Iterator[Any]:
    try:
        for chunk in chunks:
            slot.refresh()
            yield chunk
    finally:
        slot.release()
