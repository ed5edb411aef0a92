"""Domain errors raised by the shell; the API turns each into its HTTP status and error shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class MissionsError(Exception):
    code = "bad_request"
    status = 400

    def __init__(self, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = dict(details or {})

    def with_status(self, status: int) -> MissionsError:
        """The same error answered with another HTTP status (e.g. 415 for a wrong Content-Type)."""
        self.status = status
        return self


class Invalid(MissionsError):
    """The document breaks a rule; ``details["fields"]`` maps each field path to its messages."""


class NotFound(MissionsError):
    code = "not_found"
    status = 404


class Conflict(MissionsError):
    code = "conflict"
    status = 409


class Unavailable(MissionsError):
    """A service the request needs (Postgres, Redis) cannot be reached right now (down, restarting,
    or no pooled connection free in time); the same request may succeed when sent again after
    ``retry_after`` seconds (the API answers 503 with ``Retry-After``)."""

    code = "unavailable"
    status = 503
    retry_after = 5
