"""Gunicorn with gevent workers, so hundreds of SSE clients can hold connections open.

Gunicorn answers a request it cannot parse itself, before the app sees it: a request line longer
than ``LIMIT_REQUEST_LINE`` bytes (414), more than ``LIMIT_REQUEST_FIELDS`` headers or one longer
than ``LIMIT_REQUEST_FIELD_SIZE`` bytes (431), a malformed request line or header (400). Its page
is HTML; ``JsonErrorWorker`` (the gevent worker with another ``handle_error``) sends the same status
in the API's error shape instead.
"""

from __future__ import annotations

import json
import socket
from typing import Any, cast

import gevent
from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.http.message import Request
from gunicorn.workers.ggevent import GeventWorker

from api.http.limits import LIMIT_REQUEST_FIELD_SIZE, LIMIT_REQUEST_FIELDS, LIMIT_REQUEST_LINE
from config import Settings

_MESSAGES = {
    414: f"request line too long: the method, path and query string may take at most {LIMIT_REQUEST_LINE} bytes",
    431: (
        f"request headers too large: at most {LIMIT_REQUEST_FIELDS} headers of at most "
        f"{LIMIT_REQUEST_FIELD_SIZE} bytes each"
    ),
    500: "internal error; the server log has the details",
}


class _Captured:
    """A client socket that keeps what is written to it (gunicorn's HTML error page)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.data = bytearray()

    def sendall(self, data: bytes) -> None:
        self.data += data

    def send(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def gettimeout(self) -> float:
        return 0.0  # (so that gunicorn does not switch the real socket's blocking mode)

    def setblocking(self, flag: bool) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class JsonErrorWorker(GeventWorker):
    """The gevent worker, answering what gunicorn refuses itself in the error shape
    ``{"error", "code", "details"}`` (gunicorn decides the status and logs, as it would), and ending
    its event streams as soon as it is told to stop: a graceful stop waits for open requests, and an
    SSE stream never ends by itself, so without this every stop (a deploy, a restart) would leave
    the port closed for the whole graceful timeout. A released stream ends cleanly; its client
    reconnects with ``Last-Event-ID`` to a process that serves."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        gevent.spawn(self._release_streams)  # (not in the signal handler: it takes locks)

    def handle_quit(self, sig: int, frame: Any) -> None:
        gevent.spawn(self._release_streams)
        super().handle_quit(sig, frame)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        # A response that began before the stop (a stream) was sent as keep-alive; once it is done,
        # close the connection (gunicorn's way: StopIteration) instead of waiting ``keepalive``
        # seconds for a request that a stopping worker would refuse anyway.
        handled = super().handle_request(listener_name, req, sock, addr)
        if not self.alive:
            raise StopIteration
        return handled

    def _release_streams(self) -> None:
        app = getattr(self, "wsgi", None)
        services = app.extensions.get("missions") if app is not None else None
        if services is not None:
            services.release_streams()

    def handle_error(self, req: Request | None, client: socket.socket, addr: Any, exc: BaseException) -> None:
        captured = _Captured(client)
        super().handle_error(req, cast(socket.socket, captured), addr, exc)
        status_line = bytes(captured.data).split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        try:
            status, reason = int(status_line[1]), (status_line[2] if len(status_line) > 2 else "")
        except (IndexError, ValueError):  # nothing (or nothing readable) was written
            return
        try:
            util.write_nonblock(client, error_reply(status, reason, exc))
        except Exception:  # noqa: BLE001 - the client may be gone; gunicorn would ignore it too
            self.log.debug("Failed to send error message.")


def error_reply(status: int, reason: str, exc: BaseException) -> bytes:
    """A whole HTTP response: ``status`` in the API's error shape, closing the connection."""
    if status in _MESSAGES:
        message = _MESSAGES[status]
    elif status < 500:
        message = f"malformed HTTP request: {exc}"[:500]
    else:
        message = reason or "internal error"
    code = "bad_request" if status < 500 else "internal_error"  # (gunicorn answers 400, 403, 414, 417, 431, 5xx)
    body = json.dumps({"error": message, "code": code, "details": {}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class _Server(BaseApplication):
    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        # Imported in the worker, after gevent patched the standard library.
        from api.http.app import create_app
        from workers.wiring import configure_tracing

        configure_tracing("api")  # (in each server process: the exporter's thread does not survive a fork)
        self.app = create_app(self.settings)
        return self.app


def _close_services(server: _Server) -> Any:
    def worker_exit(_arbiter: Any, _worker: Any) -> None:
        app = getattr(server, "app", None)
        if app is not None:
            app.extensions["missions"].close()

    return worker_exit


def serve(settings: Settings, *, processes: int = 1) -> None:
    options = {
        "bind": f"{settings.host}:{settings.port}",
        "workers": processes,
        "worker_class": f"{__name__}.JsonErrorWorker",  # gevent, with JSON error replies
        "worker_connections": settings.api_threads,
        "timeout": 60,
        "graceful_timeout": 10,
        "keepalive": 5,
        "limit_request_line": LIMIT_REQUEST_LINE,
        "limit_request_fields": LIMIT_REQUEST_FIELDS,
        "limit_request_field_size": LIMIT_REQUEST_FIELD_SIZE,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": settings.log_level,
        "proc_name": "missions-api",
        # One control socket per host path would be shared (and deleted) by every API process.
        "control_socket_disable": True,
    }
    server = _Server(settings, options)
    server.cfg.set("worker_exit", _close_services(server))
    server.run()
