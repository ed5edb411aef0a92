"""A small Server-Sent Events client for tests: a line parser and a blocking reader over HTTP.

The parser follows the WHATWG event-stream rules (comments skipped, ``data`` lines joined with
``\\n``, one optional space after the colon removed, lines ending in ``\\n``, ``\\r\\n`` or ``\\r``)
with two differences that suit tests: ``id`` is the id given in the event's own block (not the
inherited "last event id"), and a block with an ``event`` but no ``data`` is still reported, with
``data=None``, so that a test can see it. A block with neither (``retry:`` alone) is skipped.
"""

from __future__ import annotations

import codecs
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import requests
import urllib3


@dataclass(frozen=True)
class SseEvent:
    id: int | None
    event: str | None
    data: dict[str, Any] | str | None


def iter_sse(lines: Iterable[str | bytes]) -> Iterator[SseEvent]:
    """The events in ``lines`` (each one line of the stream, with or without its line ending)."""
    event_id: int | None = None
    event_type: str | None = None
    data: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        line = line.rstrip("\r\n")
        if line == "":
            if data or event_type is not None:
                yield SseEvent(event_id, event_type, _decode_data(data) if data else None)
            event_id, event_type, data = None, None, []
            continue
        if line.startswith(":"):
            continue
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            event_type = value
        elif field == "id":
            if not value.isdigit():
                raise ValueError(f"event id is not a whole number: {value!r}")
            event_id = int(value)
        # "retry" and unknown fields carry nothing a test reads.
    # A block cut off without its blank line is not an event (a browser drops it too).


def _decode_data(lines: list[str]) -> dict[str, Any] | str:
    text = "\n".join(lines)
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, dict) else text


def read_events(
    url: str,
    headers: dict[str, str] | None = None,
    *,
    until: str | None = "mission:done",
    timeout: float = 60,
    method: str = "GET",
    json_body: Any = None,
) -> list[SseEvent]:
    """Open the stream at ``url`` and collect its events up to and including the first of type
    ``until`` (or until the server ends the stream). A 204 answer means "nothing more" and gives
    ``[]``; any other non-2xx answer raises with the body. Raises ``TimeoutError`` when ``until``
    has not arrived within ``timeout`` seconds (checked as data arrives; a stream silent for
    ``timeout`` seconds also times out), naming the events read so far."""
    deadline = time.monotonic() + timeout
    collected: list[SseEvent] = []
    with requests.request(
        method, url, headers=headers, json=json_body, stream=True, timeout=(min(timeout, 10), timeout)
    ) as response:
        if response.status_code == 204:
            return []
        if not response.ok:
            raise requests.HTTPError(
                f"{method} {url} answered {response.status_code}: {response.text[:2000]}", response=response
            )
        content_type = response.headers.get("Content-Type", "")
        if not content_type.startswith("text/event-stream"):
            raise requests.HTTPError(
                f"{method} {url} answered {content_type!r}, not text/event-stream", response=response
            )
        try:
            for event in iter_sse(_lines(response, deadline)):
                collected.append(event)
                if until is not None and event.event == until:
                    return collected
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise _timed_out(until, timeout, collected) from exc
    if time.monotonic() >= deadline:
        raise _timed_out(until, timeout, collected)
    return collected


def _timed_out(until: str | None, timeout: float, events: list[SseEvent]) -> TimeoutError:
    awaited = f"no {until!r} event" if until is not None else "the stream did not end"
    return TimeoutError(f"{awaited} within {timeout}s; read {_summary(events)}")


def _lines(response: requests.Response, deadline: float) -> Iterator[str]:
    """The body's lines as they arrive. ``iter_lines`` would wait for a whole chunk of 512 bytes on
    a response that is not chunked; ``read1`` returns whatever the socket has. A server silent
    for longer than the read timeout raises urllib3's ``ReadTimeoutError``."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    pending = ""
    for chunk in _chunks(response):
        pending += decoder.decode(chunk)
        while True:
            cut = _line_end(pending)
            if cut is None:
                break
            end, after = cut
            yield pending[:end]
            pending = pending[after:]
        if time.monotonic() >= deadline:
            return
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending


def _chunks(response: requests.Response) -> Iterator[bytes]:
    read1 = getattr(response.raw, "read1", None)
    if read1 is None:
        yield from response.iter_content(chunk_size=None)
        return
    while chunk := read1(65536, decode_content=True):
        yield chunk


def _line_end(text: str) -> tuple[int, int] | None:
    """Where the first line of ``text`` ends and the next begins; None until a line is complete
    (a trailing ``\\r`` may still be followed by ``\\n``)."""
    for index, char in enumerate(text):
        if char == "\n":
            return index, index + 1
        if char == "\r":
            if index + 1 == len(text):
                return None
            return index, index + 2 if text[index + 1] == "\n" else index + 1
    return None


def _summary(events: list[SseEvent]) -> str:
    if not events:
        return "no events"
    return ", ".join(f"{e.event}#{e.id}" for e in events[-20:]) + (" (last 20)" if len(events) > 20 else "")
