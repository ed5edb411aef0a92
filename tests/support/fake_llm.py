"""A loopback fake of the OpenAI Chat Completions and Anthropic Messages APIs, for tests.

It speaks real HTTP on 127.0.0.1 so the official SDKs are exercised unpatched: plain and streamed
(SSE) replies, tool calls, usage, error statuses with ``retry-after``, and replies that hang (to
test cancellation). Replies are scripted per model name: the n-th request for a model plays the
n-th reply given for it, the last one repeating. Every request is recorded with its JSON body, so
a test can assert on exactly what a worker sent.

    with FakeLLM() as llm:
        llm.script("gpt-test", say("hello", usage=(12, 3)))
        # a profile {"provider": "openai", "baseUrl": llm.openai_url}, an agent {"model": "openai/gpt-test", ...}
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``arguments`` of a tool call may be a raw string (malformed JSON)."""

    text: str = ""
    tool_calls: tuple[tuple[str, Mapping[str, Any] | str], ...] = ()
    usage: tuple[int, int] = (10, 5)
    status: int = 200
    error: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (an abort must not wait for it)
    chunk_delay: float = 0.0  # seconds between streamed chunks
    chunks: tuple[str, ...] | None = None  # how ``text`` is split when streamed (default: by word)
    after: str | None = None  # answer only once a request for this model has arrived (ordering tests)


def say(
    text: str,
    *,
    usage: tuple[int, int] = (10, 5),
    chunks: Sequence[str] | None = None,
    chunk_delay: float = 0.0,
    delay: float = 0.0,
    after: str | None = None,
) -> Reply:
    return Reply(
        text=text,
        usage=usage,
        chunks=tuple(chunks) if chunks is not None else None,
        chunk_delay=chunk_delay,
        delay=delay,
        after=after,
    )


def call(
    name: str,
    arguments: Mapping[str, Any] | str,
    *more: tuple[str, Mapping[str, Any] | str],
    text: str = "",
    usage: tuple[int, int] = (10, 5),
) -> Reply:
    return Reply(text=text, tool_calls=((name, arguments), *more), usage=usage)


def fail(status: int, message: str = "scripted failure", *, retry_after: float | None = None) -> Reply:
    headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
    return Reply(status=status, error=message, headers=headers)


def hang(seconds: float) -> Reply:
    return Reply(text="too late", delay=seconds)


@dataclass(frozen=True)
class Seen:
    """A request the fake received."""

    api: str  # "openai" | "anthropic" | "get"
    path: str
    headers: Mapping[str, str]
    body: Mapping[str, Any]
    at: float

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def text(self) -> str:
        """Every piece of text in the request (system, messages, tool results), joined."""
        parts: list[str] = []

        def walk(value: Any) -> None:
            if isinstance(value, str):
                parts.append(value)
            elif isinstance(value, Mapping):
                for key, item in value.items():
                    if key not in ("type", "role", "id", "tool_use_id", "tool_call_id", "name", "model"):
                        walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)

        walk(self.body.get("system"))
        walk(self.body.get("messages"))
        return "\n".join(parts)


class FakeLLM:
    def __init__(self) -> None:
        self._scripts: dict[str, list[Reply]] = {}
        self._served: dict[str, int] = {}
        self._lock = threading.Lock()
        self.requests: list[Seen] = []
        self.pages: dict[str, tuple[int, str]] = {}  # GET path -> (status, body), for http_request tools
        self.disconnects = 0  # streamed or delayed replies whose client went away
        # (model, arrived, answered) of every model call answered in full, on time.monotonic()'s clock:
        # when calls overlapped.
        self.intervals: list[tuple[str, float, float]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-llm", daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> FakeLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def openai_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_url(self) -> str:
        return self.url

    # -- scripting ------------------------------------------------------------------------------
    def script(self, model: str, *replies: Reply) -> None:
        with self._lock:
            self._scripts[model] = list(replies)
            self._served[model] = 0

    def page(self, path: str, body: str, status: int = 200) -> None:
        self.pages[path] = (status, body)

    def seen(self, model: str | None = None) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if model is None or r.model == model]

    def next_reply(self, model: str) -> Reply:
        with self._lock:
            replies = self._scripts.get(model)
            if not replies:
                return fail(400, f"the fake has no script for model {model!r}")
            n = self._served[model]
            self._served[model] = n + 1
            return replies[min(n, len(replies) - 1)]

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)


# --------------------------------------------------------------------------------------------
# Wire formats


def _split(reply: Reply) -> list[str]:
    if reply.chunks is not None:
        return list(reply.chunks)
    if not reply.text:
        return []
    words = reply.text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


def _arguments(arguments: Mapping[str, Any] | str) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def openai_body(reply: Reply, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": _arguments(args)}}
            for i, (name, args) in enumerate(reply.tool_calls)
        ]
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if reply.tool_calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": reply.usage[0],
            "completion_tokens": reply.usage[1],
            "total_tokens": sum(reply.usage),
        },
    }


def openai_events(reply: Reply, model: str, include_usage: bool) -> Iterator[str]:
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return json.dumps(
            {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        )

    yield chunk({"role": "assistant", "content": ""})
    for piece in _split(reply):
        yield chunk({"content": piece})
    for i, (name, args) in enumerate(reply.tool_calls):
        raw = _arguments(args)
        yield chunk(
            {
                "tool_calls": [
                    {"index": i, "id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": ""}}
                ]
            }
        )
        half = len(raw) // 2
        for part in (raw[:half], raw[half:]):
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]})
    yield chunk({}, "tool_calls" if reply.tool_calls else "stop")
    if include_usage:
        yield json.dumps(
            {
                **base,
                "choices": [],
                "usage": {
                    "prompt_tokens": reply.usage[0],
                    "completion_tokens": reply.usage[1],
                    "total_tokens": sum(reply.usage),
                },
            }
        )
    yield "[DONE]"


def _anthropic_content(reply: Reply) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    for i, (name, args) in enumerate(reply.tool_calls):
        content.append(
            {
                "type": "tool_use",
                "id": f"toolu_{i}",
                "name": name,
                "input": args if not isinstance(args, str) else json.loads(args),
            }
        )
    return content


def anthropic_body(reply: Reply, model: str) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _anthropic_content(reply),
        "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": reply.usage[0], "output_tokens": reply.usage[1]},
    }


def anthropic_events(reply: Reply, model: str) -> Iterator[tuple[str, str]]:
    start = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": reply.usage[0], "output_tokens": 1},
    }
    yield "message_start", json.dumps({"type": "message_start", "message": start})
    index = 0
    pieces = _split(reply)
    if pieces:
        yield (
            "content_block_start",
            json.dumps({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
        )
        for piece in pieces:
            yield (
                "content_block_delta",
                json.dumps(
                    {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}
                ),
            )
        yield "content_block_stop", json.dumps({"type": "content_block_stop", "index": index})
        index += 1
    for i, (name, args) in enumerate(reply.tool_calls):
        raw = _arguments(args)
        yield (
            "content_block_start",
            json.dumps(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": {}},
                }
            ),
        )
        half = len(raw) // 2
        for part in (raw[:half], raw[half:]):
            yield (
                "content_block_delta",
                json.dumps(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": part},
                    }
                ),
            )
        yield "content_block_stop", json.dumps({"type": "content_block_stop", "index": index})
        index += 1
    yield (
        "message_delta",
        json.dumps(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use" if reply.tool_calls else "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": reply.usage[1]},
            }
        ),
    )
    yield "message_stop", json.dumps({"type": "message_stop"})


def _error_body(api: str, status: int, message: str) -> dict[str, Any]:
    if api == "anthropic":
        kind = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            429: "rate_limit_error",
            529: "overloaded_error",
        }.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error" if status < 500 else "server_error",
            "code": None,
            "param": None,
        }
    }


def _handler(fake: FakeLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            fake.record(Seen("get", self.path, dict(self.headers), {}, time.monotonic()))
            status, body = fake.pages.get(self.path, (404, "not found"))
            self._send(status, body.encode(), "text/plain")

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                body = {}
            if self.path.rstrip("/").endswith("/chat/completions"):
                api = "openai"
            elif self.path.split("?")[0].rstrip("/").endswith("/v1/messages"):
                api = "anthropic"
            else:
                fake.record(Seen("get", self.path, dict(self.headers), body, time.monotonic()))
                self._send(404, b'{"error": {"message": "no such route"}}', "application/json")
                return
            arrived = time.monotonic()
            fake.record(Seen(api, self.path, dict(self.headers), body, arrived))
            model = str(body.get("model", ""))
            if self._answer(api, body, model):
                with fake._lock:
                    fake.intervals.append((model, arrived, time.monotonic()))

        def _answer(self, api: str, body: Mapping[str, Any], model: str) -> bool:
            """Play the model's next reply; False when the client hung up before it was sent."""
            reply = fake.next_reply(model)
            if reply.after is not None:
                deadline = time.monotonic() + 30
                while not fake.seen(reply.after) and time.monotonic() < deadline:
                    time.sleep(0.02)
            if reply.delay and not self._wait(reply.delay):
                return False
            if reply.status != 200:
                payload = json.dumps(_error_body(api, reply.status, reply.error)).encode()
                self._send(reply.status, payload, "application/json", reply.headers)
                return True
            if body.get("stream"):
                if api == "openai":
                    include = bool((body.get("stream_options") or {}).get("include_usage"))
                    frames = ((None, data) for data in openai_events(reply, model, include))
                else:
                    frames = ((name, data) for name, data in anthropic_events(reply, model))
                self._stream(frames, reply.chunk_delay)
                return True
            payload = openai_body(reply, model) if api == "openai" else anthropic_body(reply, model)
            self._send(200, json.dumps(payload).encode(), "application/json")
            return True

        def _wait(self, seconds: float) -> bool:
            """Sleep, but notice a client that hung up (so tests can see a cancelled call)."""
            deadline = time.monotonic() + seconds
            import select

            while time.monotonic() < deadline:
                readable, _, _ = select.select([self.connection], [], [], 0.05)
                if readable and not self.connection.recv(1, 2):  # MSG_PEEK: b"" means closed
                    with fake._lock:
                        fake.disconnects += 1
                    self.close_connection = True
                    return False
            return True

        def _send(self, status: int, payload: bytes, kind: str, headers: Mapping[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(payload)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        def _stream(self, frames: Iterator[tuple[str | None, str]], delay: float) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                for name, data in frames:
                    frame = (f"event: {name}\n" if name else "") + f"data: {data}\n\n"
                    self.wfile.write(frame.encode())
                    self.wfile.flush()
                    if delay:
                        time.sleep(delay)
            except (BrokenPipeError, ConnectionResetError):
                with fake._lock:
                    fake.disconnects += 1

    return Handler
