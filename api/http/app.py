"""The Flask application factory. Nothing connects until the first request needs it."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify

from api.http import dashboard, errors, metrics, ratelimit
from api.http.agents import blueprint as agents_blueprint
from api.http.control_routes import blueprint as control_blueprint
from api.http.keys import blueprint as keys_blueprint
from api.http.openapi import blueprint as docs_blueprint
from api.http.routes import blueprint as missions_blueprint
from api.http.webhooks import blueprint as webhooks_blueprint
from config import Settings
from workers.store.db import Database
from workers.support import tracing
from workers.support.errors import Unavailable
from workers.wiring import Services

log = logging.getLogger(__name__)

# How long a request waits for a pooled Postgres connection before it is answered 503 with
# Retry-After (workers keep the pool's 30 s): while Postgres is down or restarting, clients learn it
# within this, instead of holding a connection open until a proxy gives up.
POOL_WAIT_SECONDS = 3.0


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask("missions", static_folder=None)  # (Flask would serve ./static from the working directory)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["missions"] = services = services or Services(settings)
    errors.register(app)
    ratelimit.install(app, services)
    app.register_blueprint(missions_blueprint, url_prefix="/v1")
    app.register_blueprint(webhooks_blueprint, url_prefix="/v1")
    app.register_blueprint(control_blueprint, url_prefix="/v1")
    app.register_blueprint(keys_blueprint, url_prefix="/v1")
    app.register_blueprint(agents_blueprint, url_prefix="/v1")
    app.register_blueprint(docs_blueprint)  # /v1/openapi.json and /docs, without a key
    metrics.install(app, token=settings.metrics_token)  # /metrics, without an API key
    app.wsgi_app = _waiting_at_most(POOL_WAIT_SECONDS, app.wsgi_app)  # type: ignore[method-assign]
    if tracing.enabled():
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        # Probes and scrapes would each start a trace; OTEL_PYTHON_FLASK_EXCLUDED_URLS overrides.
        excluded = os.environ.get("OTEL_PYTHON_FLASK_EXCLUDED_URLS", "healthz,readyz,metrics")
        FlaskInstrumentor().instrument_app(app, excluded_urls=excluded)  # type: ignore[no-untyped-call]
    app.wsgi_app = dashboard.install(app.wsgi_app)  # type: ignore[method-assign]  # /, /ui/: the page for people

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Any:
        svc: Services = app.extensions["missions"]
        checks: dict[str, str] = {}
        try:
            svc.db.ping(timeout=2)
            checks["postgres"] = "ok"
        except Exception as exc:  # noqa: BLE001 - readiness reports any failure, it never raises
            checks["postgres"] = f"error: {exc.__class__.__name__}: {exc}"
        try:
            svc.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001 - (as above)
            checks["redis"] = f"error: {exc.__class__.__name__}: {exc}"
        ready = all(v == "ok" for v in checks.values())
        response = jsonify({"status": "ready" if ready else "not_ready", "checks": checks})
        if not ready:
            response.status_code = 503
            response.headers["Retry-After"] = str(Unavailable.retry_after)
        return response

    return app


def _waiting_at_most(seconds: float, wsgi_app: Callable[..., Any]) -> Callable[..., Any]:
    """``wsgi_app`` with every request waiting at most ``seconds`` for a pooled connection (a
    stream's later reads, after the response started, keep the pool's own wait)."""

    def app(environ: Any, start_response: Any) -> Any:
        with Database.waiting_at_most(seconds):
            return wsgi_app(environ, start_response)

    return app
