"""Gunicorn's limits on what precedes a request's body (``api.http.server`` sets them; the OpenAPI
document states them). The body's own limit is ``MISSIONS_MAX_BODY_BYTES``."""

from __future__ import annotations

LIMIT_REQUEST_LINE = 4094  # bytes of "METHOD /path?query HTTP/1.1": 414 past it
LIMIT_REQUEST_FIELDS = 100  # headers: 431 past it
LIMIT_REQUEST_FIELD_SIZE = 8190  # bytes of one header line: 431 past it
