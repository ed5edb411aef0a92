"""The Flask application factory. Nothing connects until the first request needs it."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify

from api.http import errors, metrics
from api.http.openapi import blueprint as docs_blueprint
from api.http.routes import blueprint as missions_blueprint
from config import Settings
from workers.wiring import Services

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask("missions")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["missions"] = services or Services(settings)
    errors.register(app)
    app.register_blueprint(missions_blueprint, url_prefix="/v1")
    app.register_blueprint(docs_blueprint)  # /v1/openapi.json and /docs, without a key
    metrics.install(app)  # /metrics, without a key

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
        return jsonify({"status": "ready" if ready else "not_ready", "checks": checks}), 200 if ready else 503

    return app
