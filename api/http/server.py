"""Gunicorn with gevent workers, so hundreds of SSE clients can hold connections open."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from config import Settings


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
        "worker_class": "gevent",
        "worker_connections": settings.api_threads,
        "timeout": 60,
        "graceful_timeout": 10,
        "keepalive": 5,
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
