"""The HTTP client of the ``missions`` CLI: the JSON routes and a Server-Sent Events reader that
survives dropped connections.

``Client.follow`` yields the events of one run and ends after ``mission:done``. When the stream
breaks (connection reset, a server restart, a proxy cutting an idle connection, or silence longer
than ``read_timeout`` although the server sends a comment every 15 s), it reconnects with
``Last-Event-ID`` set to the last id it yielded; the server replays exactly what came after, and
any event at or below that id is dropped here as well, so a caller never sees an event twice or
misses one. It gives up (``StreamLost``) only after ``give_up_after`` seconds without a working
connection.

Every POST, PATCH and DELETE carries an ``Idempotency-Key`` (a new one per call), so the JSON
routes may be sent again safely: when the answer is lost after the request left (the connection
dropped or the read timed out), or the server asks for a retry (429, 503, or a 409 saying the same
request is still in progress), the same request goes again with the same key, up to ``RETRIES``
times, after ``Retry-After`` (at most ``MAX_RETRY_WAIT`` seconds); the server runs it at most once
and a repeat gets the first answer. A server that cannot be reached at all fails at once.
"""

from __future__ import annotations

import codecs
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import requests

DEFAULT_URL = "http://127.0.0.1:8000"
USER_AGENT = "missions-cli"
RETRIES = 3  # sends of one JSON request after the first
MAX_RETRY_WAIT = 10.0  # seconds: a longer Retry-After is not waited for
MUTATING = frozenset({"POST", "PATCH", "DELETE"})


class ApiError(Exception):
    """The server answered with an error (its ``{"error", "code", "details"}`` body) or not at all."""

    def __init__(
        self, message: str, status: int | None = None, code: str | None = None, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = dict(details or {})

    def __str__(self) -> str:
        head = f"{self.status} {self.code}: " if self.status else ""
        fields = self.details.get("fields")
        if isinstance(fields, Mapping) and fields:
            lines = [
                f"  {name}: {'; '.join(map(str, msgs)) if isinstance(msgs, list) else msgs}"
                for name, msgs in fields.items()
            ]
            return head + self.message + "\n" + "\n".join(lines)
        return head + self.message


class StreamLost(ApiError):
    """The event stream could not be re-established in time."""


@dataclass(frozen=True)
class Event:
    id: int | None
    type: str
    data: dict[str, Any]


class Client:
    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout: float = 30.0,
        read_timeout: float = 45.0,
        give_up_after: float = 120.0,
        reconnect_delay: float = 0.5,
        session: requests.Session | None = None,
    ) -> None:
        self.base = url.rstrip("/")
        self.reconnect_delay = reconnect_delay
        self.key = key
        self.timeout = timeout
        self.read_timeout = read_timeout
        self.give_up_after = give_up_after
        self.session = session or requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {key}", "User-Agent": USER_AGENT})

    def close(self) -> None:
        self.session.close()

    # -- JSON routes ------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        expect: tuple[int, ...] = (200, 201, 202, 204),
    ) -> Any:
        headers = {"Idempotency-Key": f"missions-cli-{uuid.uuid4()}"} if method in MUTATING else {}
        for attempt in range(RETRIES + 1):
            last = attempt == RETRIES
            try:
                response = self.session.request(
                    method, f"{self.base}{path}", json=json_body, params=params, headers=headers, timeout=self.timeout
                )
            except requests.RequestException as exc:
                if last or not _maybe_sent(exc):  # (a GET is safe to send again; the rest carry a key)
                    raise ApiError(
                        f"cannot reach {self.base} ({_why(exc)}); is the server running? (`missions up`, or pass --url)"
                    ) from None
                time.sleep(self.reconnect_delay * 2**attempt)
                continue
            wait = _retry_after(response)
            if last or wait is None:
                break
            response.close()
            time.sleep(wait)
        if response.status_code not in expect:
            raise _error_of(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                f"{method} {path} answered {response.status_code} with a body that is not JSON", response.status_code
            ) from None

    def list_missions(self, status: str | None = None, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        return list(self.request("GET", "/v1/missions", params=params))

    def resumable(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/v1/missions/resumable"))

    def create_mission(self, document: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/missions", json_body=document))

    def get_mission(self, mission_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/missions/{mission_id}"))

    def delete_mission(self, mission_id: str) -> None:
        self.request("DELETE", f"/v1/missions/{mission_id}")

    def execute(self, mission_id: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        body = {"data": data} if data is not None else None
        return dict(self.request("POST", f"/v1/missions/{mission_id}/execute", json_body=body))

    def resume(self, mission_id: str, retry_failed: bool = False) -> dict[str, Any]:
        return dict(self.request("POST", f"/v1/missions/{mission_id}/resume", json_body={"retryFailed": retry_failed}))

    def review(
        self, mission_id: str, decision: str, feedback: str | None = None, redo: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"decision": decision}
        if feedback is not None:
            body["feedback"] = feedback
        if redo:
            body["redo"] = list(redo)
        return dict(self.request("POST", f"/v1/missions/{mission_id}/review", json_body=body))

    def task_command(self, mission_id: str, task_id: str, action: str) -> dict[str, Any]:
        """``action`` (retry, cancel) on one task of the mission's latest run; the task as it now stands."""
        return dict(self.request("POST", f"/v1/missions/{mission_id}/tasks/{task_id}/{action}"))

    def abort(self, mission_id: str) -> dict[str, Any]:
        return dict(self.request("POST", f"/v1/missions/{mission_id}/abort"))

    def runs(self, mission_id: str, limit: int = 50) -> list[dict[str, Any]]:
        return list(self.request("GET", f"/v1/missions/{mission_id}/runs", params={"limit": limit}))

    def get_run(self, mission_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/missions/{mission_id}/runs/{run_id}"))

    # -- events -----------------------------------------------------------------------------
    def follow(
        self,
        mission_id: str,
        run_id: str | None = None,
        last_event_id: int | None = None,
        *,
        on_reconnect: Callable[[str], None] | None = None,
    ) -> Iterator[Event]:
        """The run's events after ``last_event_id``, live, up to and including its latest
        ``mission:done`` (the server closes the stream after it).

        Without ``run_id`` the latest run is followed (pinned to the first event's run, so a
        reconnect cannot jump to a newer run)."""
        last_id = last_event_id
        backoff = self.reconnect_delay
        failing_since: float | None = None
        params: dict[str, str] = {}
        while True:
            if run_id:
                params["runId"] = run_id
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = str(last_id)
            problem: str
            try:
                with self.session.get(
                    f"{self.base}/v1/missions/{mission_id}/events",
                    params=params,
                    headers=headers,
                    stream=True,
                    timeout=(min(self.timeout, 10.0), self.read_timeout),
                ) as response:
                    if response.status_code == 204:
                        return  # the server says the run ended at or before last_id
                    if response.status_code >= 500 or response.status_code == 429:
                        problem = f"the server answered {response.status_code}"
                    elif not response.ok:
                        raise _error_of(response)
                    elif not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                        raise ApiError(
                            f"the events route answered {response.headers.get('Content-Type')!r},"
                            " not text/event-stream",
                            response.status_code,
                        )
                    else:
                        failing_since, backoff = None, self.reconnect_delay
                        last_type = None
                        for event in parse_events(_chunks(response)):
                            if event.id is not None:
                                if last_id is not None and event.id <= last_id:
                                    continue  # already yielded before a reconnect
                                last_id = event.id
                            run_id = run_id or event.data.get("runId")
                            last_type = event.type
                            yield event
                        # The server ends the stream after the run's latest mission:done (a run
                        # continued after it failed has an earlier one, with more events after it).
                        if last_type == "mission:done":
                            return
                        problem = "the server closed the stream"
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                problem = f"connection lost ({exc.__class__.__name__})"
            now = time.monotonic()
            failing_since = failing_since or now
            if now - failing_since > self.give_up_after:
                raise StreamLost(
                    f"lost the event stream of {mission_id} and could not reconnect within "
                    f"{self.give_up_after:g} s ({problem})"
                )
            if on_reconnect is not None:
                on_reconnect(f"{problem}; reconnecting after event {last_id}")
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


def _maybe_sent(exc: requests.RequestException) -> bool:
    """Whether the request may have reached the server (its answer was lost), not refused at connect."""
    if isinstance(exc, (requests.ConnectTimeout, requests.exceptions.SSLError)):
        return False
    if isinstance(exc, (requests.ReadTimeout, requests.exceptions.ChunkedEncodingError)):
        return True
    text = str(exc)
    return isinstance(exc, requests.ConnectionError) and not any(
        needle in text for needle in ("Connection refused", "Name or service not known", "NewConnectionError")
    )


def _retry_after(response: requests.Response) -> float | None:
    """Seconds to wait before sending the request again, when the server asks for that; else None."""
    in_progress = False
    if response.status_code == 409:
        try:
            body = response.json()
        except ValueError:
            body = None
        in_progress = isinstance(body, Mapping) and (body.get("details") or {}).get("reason") == "in_progress"
    if response.status_code not in (429, 503) and not in_progress:
        return None
    try:
        seconds = float(response.headers.get("Retry-After", "1"))
    except ValueError:
        seconds = 1.0
    return max(0.0, seconds) if seconds <= MAX_RETRY_WAIT else None


def _why(exc: requests.RequestException) -> str:
    text = str(exc)
    for needle, short in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "unknown host"),
        ("timed out", "timed out"),
        ("Connection reset", "connection reset"),
    ):
        if needle in text:
            return short
    return exc.__class__.__name__


def _error_of(response: requests.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping) and "error" in body:
        return ApiError(str(body["error"]), response.status_code, body.get("code"), body.get("details") or {})
    text = response.text.strip().splitlines()[0][:200] if response.text.strip() else response.reason
    return ApiError(
        f"{response.request.method} {response.url} answered {response.status_code}: {text}", response.status_code
    )


def _chunks(response: requests.Response) -> Iterator[bytes]:
    """What the socket has, as soon as it has it (``iter_lines`` would wait for whole chunks)."""
    read1 = getattr(response.raw, "read1", None)
    if read1 is None:
        yield from response.iter_content(chunk_size=None)
        return
    while chunk := read1(65536, decode_content=True):
        yield chunk


def parse_events(chunks: Iterator[bytes]) -> Iterator[Event]:
    """Server-Sent Events from raw bytes (WHATWG rules: comments skipped, ``data`` lines joined,
    lines end in LF, CRLF or CR). A block without ``data`` or whose data is not a JSON object is
    skipped; a block cut off by a dropped connection is never yielded."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    pending = ""
    event_id: int | None = None
    event_type: str | None = None
    data: list[str] = []
    for chunk in chunks:
        pending += decoder.decode(chunk)
        lines, pending = _complete_lines(pending)
        for line in lines:
            if line == "":
                if data:
                    event = _event(event_id, event_type or "message", data)
                    if event is not None:
                        yield event
                event_id, event_type, data = None, None, []
                continue
            if line.startswith(":"):
                continue
            name, colon, value = line.partition(":")
            if colon and value.startswith(" "):
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "event":
                event_type = value
            elif name == "id" and value.isdigit():
                event_id = int(value)


_LINE_END = re.compile(r"\r\n|\r|\n")


def _complete_lines(text: str) -> tuple[list[str], str]:
    """The complete lines of ``text`` and the rest; a trailing CR waits, it may precede an LF."""
    lines: list[str] = []
    start = 0
    for match in _LINE_END.finditer(text):
        if match.group() == "\r" and match.end() == len(text):
            break
        lines.append(text[start : match.start()])
        start = match.end()
    return lines, text[start:]


def _event(event_id: int | None, event_type: str, data: list[str]) -> Event | None:
    try:
        payload = json.loads("\n".join(data))
    except ValueError:
        return None
    return Event(event_id, event_type, payload) if isinstance(payload, dict) else None
