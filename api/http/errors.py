"""One error shape for every failure: ``{"error", "code", "details"}``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from workers.support.errors import MissionsError, Unavailable

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    409: "conflict",
    429: "rate_limited",
    503: "unavailable",
}


def error_response(
    status: int, message: str, details: Mapping[str, Any] | None = None, code: str | None = None
) -> Response:
    body = {
        "error": message,
        "code": code or _CODES.get(status, "bad_request" if status < 500 else "internal_error"),
        "details": dict(details or {}),
    }
    response = jsonify(body)
    response.status_code = status
    return response


def flatten_messages(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """Marshmallow's nested error dict as ``{"tasks[0].title": ["Missing data for required field."]}``."""
    out: dict[str, list[str]] = {}
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            if isinstance(key, int):
                path = f"{prefix}[{key}]"
            elif key == "_schema":
                path = prefix or "body"
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            for sub, texts in flatten_messages(value, path).items():
                out.setdefault(sub, []).extend(texts)
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        out[prefix or "body"] = list(messages)
    elif isinstance(messages, list):
        for index, value in enumerate(messages):
            for sub, texts in flatten_messages(value, f"{prefix}[{index}]").items():
                out.setdefault(sub, []).extend(texts)
    else:
        out[prefix or "body"] = [str(messages)]
    return out


def validation_error(exc: ValidationError) -> Response:
    fields = flatten_messages(exc.messages)
    first_field, first_messages = next(iter(fields.items()))
    more = f" (and {len(fields) - 1} more fields)" if len(fields) > 1 else ""
    return error_response(400, f"{first_field}: {first_messages[0]}{more}", {"fields": fields})


def register(app: Flask) -> None:
    @app.errorhandler(MissionsError)
    def _domain(exc: MissionsError) -> Response:
        response = error_response(exc.status, exc.message, exc.details, exc.code)
        if isinstance(exc, Unavailable):
            # What failed (hosts, ports, the driver's words) goes to the log, not to the client; one
            # line, no traceback: during an outage every request says the same.
            log.warning("503 %s %s: %s (%s)", request.method, request.path, exc.message, exc.__cause__ or exc)
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError) -> Response:
        return validation_error(exc)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        messages = {
            404: "no such route",
            405: "method not allowed on this route",
            413: "request body too large",
        }
        message = messages.get(status) or (exc.description or exc.name)
        response = error_response(status, message)
        if status == 503:
            response.headers["Retry-After"] = str(Unavailable.retry_after)
        if status == 405 and exc.response is None:
            allowed = getattr(exc, "valid_methods", None)
            if allowed:
                response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")  # noqa: LOG004 - Flask calls this handler inside the except
        return error_response(500, "internal error; the server log has the details", code="internal_error")
