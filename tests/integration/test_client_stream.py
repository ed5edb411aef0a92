"""The CLI's event reader over a real loopback socket: a stream cut in the middle is resumed with
``Last-Event-ID`` and no event is lost or repeated."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from api.cli.client import ApiError, Client, StreamLost, parse_events


def frame(event_id: int, kind: str, **data: Any) -> bytes:
    body = json.dumps({"missionId": "msn_1", "runId": "run_1", **data})
    return f"id: {event_id}\nevent: {kind}\ndata: {body}\n\n".encode()


class FakeServer(ThreadingHTTPServer):
    """Serves /v1/missions/msn_1/events from a list of scripted connections."""

    daemon_threads = True

    def __init__(self, connections: list[list[bytes]]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.connections = connections
        self.requests: list[dict[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append(
            {
                "path": self.path,
                "last-event-id": self.headers.get("Last-Event-ID", ""),
                "authorization": self.headers.get("Authorization", ""),
            }
        )
        frames = self.server.connections.pop(0) if self.server.connections else None
        if frames is None:
            self.send_response(503)
            self.end_headers()
            return
        if frames == [b"404"]:
            body = json.dumps({"error": "mission not found", "code": "not_found", "details": {}}).encode()
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for chunk in frames:
            self.wfile.write(chunk)
            self.wfile.flush()
        # Returning without a final blank line closes the connection mid-stream.
        self.close_connection = True


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[FakeServer] = []

    def start(connections: list[list[bytes]]) -> FakeServer:
        server = FakeServer(connections)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_dropped_stream_is_resumed_after_the_last_event_seen(serve: Any) -> None:
    server = serve(
        [
            [
                b"retry: 2000\n\n",
                frame(1, "mission:status", status="active"),
                frame(2, "task:status", status="queued"),
                b'id: 3\nevent: task:status\ndata: {"cut',
            ],  # the connection drops inside event 3
            [frame(3, "task:status", status="running"), frame(4, "mission:done", status="completed")],
        ]
    )
    notes: list[str] = []
    client = Client(server.url, "sk_live_test", reconnect_delay=0.05)
    events = list(client.follow("msn_1", "run_1", on_reconnect=notes.append))
    assert [(e.id, e.type) for e in events] == [
        (1, "mission:status"),
        (2, "task:status"),
        (3, "task:status"),
        (4, "mission:done"),
    ]
    assert [r["last-event-id"] for r in server.requests] == ["", "2"]
    assert all(r["path"] == "/v1/missions/msn_1/events?runId=run_1" for r in server.requests)
    assert server.requests[0]["authorization"] == "Bearer sk_live_test"
    assert len(notes) == 1 and "after event 2" in notes[0]


def test_an_event_the_server_sends_again_is_not_repeated(serve: Any) -> None:
    server = serve(
        [
            [frame(1, "task:status", status="queued")],
            [frame(1, "task:status", status="queued"), frame(2, "mission:done", status="failed")],
        ]
    )
    events = list(Client(server.url, "k", reconnect_delay=0.05).follow("msn_1", "run_1"))
    assert [e.id for e in events] == [1, 2]


def test_a_server_error_while_reconnecting_is_retried(serve: Any) -> None:
    server = serve([[frame(1, "task:status", status="queued")], [], [frame(2, "mission:done", status="completed")]])
    server.connections.insert(1, None)  # type: ignore[arg-type]  # one 503 in between
    events = list(Client(server.url, "k", reconnect_delay=0.05).follow("msn_1", "run_1"))
    assert [e.id for e in events] == [1, 2]


def test_a_client_error_is_not_retried(serve: Any) -> None:
    server = serve([[b"404"]])
    with pytest.raises(ApiError) as raised:
        list(Client(server.url, "k", reconnect_delay=0.05).follow("msn_1"))
    assert raised.value.status == 404 and raised.value.code == "not_found"
    assert len(server.requests) == 1


def test_it_gives_up_when_the_server_stays_away() -> None:
    client = Client("http://127.0.0.1:9", "k", give_up_after=0.5, reconnect_delay=0.05)
    with pytest.raises(StreamLost):
        list(client.follow("msn_1", "run_1"))


def test_the_parser_handles_split_chunks_crlf_comments_and_a_cut_block() -> None:
    chunks = [
        b': keep-alive\n\nid: 5\nevent: task:output\ndata: {"chunk": ',
        b'"a\\u2028b"}\r',
        b"\n\r\n",
        b"id: 6\nevent: mission:done\ndata: {}\n",
    ]
    events = list(parse_events(iter(chunks)))
    assert [(e.id, e.type, e.data) for e in events] == [(5, "task:output", {"chunk": "a\u2028b"})]
