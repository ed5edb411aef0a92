"""Webhooks: the rules, without I/O.

- ``EVENT_NAMES``: the events a webhook may subscribe to, the SSE event names (DESIGN §3).
- ``retry_delay``: the wait before the next attempt of a delivery. Attempt ``n`` (1 based) that
  failed waits ``base * 2**(n-1)`` seconds, capped at ``cap``, scaled by ``0.5 + jitter / 2`` with
  ``jitter`` in [0, 1] ("equal jitter": at least half the exponential wait, so retries of many
  deliveries spread out without ever coming early). The caller draws ``jitter``.
- ``gives_up``: a delivery is retried until it is older than the retry window (a day by default),
  then it is ``failed``: the attempt that would start after the window is not made.
- ``payload``: the body of a delivery (the Standard Webhooks shape ``{type, timestamp, data}``).
- ``parse_secret``: a signing secret is ``whsec_`` and the base64 of 24 to 64 random bytes.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from orchestrator.spec import format_timestamp

EVENT_NAMES: tuple[str, ...] = (
    "mission:status",
    "task:status",
    "task:output",
    "task:assessment",
    "gate:blocked",
    "checkpoint:waiting",
    "mission:done",
    "error",
    # ours, for operator control: a person's decision at a review, and a delay starting and ending
    "review:decided",
    "delay:started",
    "delay:ended",
)

SECRET_PREFIX = "whsec_"
SECRET_MIN_BYTES = 24
SECRET_MAX_BYTES = 64

# Delivery statuses.
PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"


def retry_delay(attempt: int, base: float, cap: float, jitter: float) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1 based) before the next one."""
    if attempt < 1:
        raise ValueError("attempts count from 1")
    jitter = min(1.0, max(0.0, jitter))
    exponent = min(attempt - 1, 60)  # (2**60 times any base is past every cap)
    return float(min(cap, base * 2.0**exponent) * (0.5 + jitter / 2))


def gives_up(created_at: datetime, next_attempt_at: datetime, window_seconds: float) -> bool:
    """Whether a delivery created at ``created_at`` stops instead of trying again at ``next_attempt_at``."""
    return (next_attempt_at - created_at).total_seconds() > window_seconds


def payload(event_type: str, data: Any, at: datetime) -> dict[str, Any]:
    """The JSON body of one delivery: the event's name, when it happened and its data."""
    return {"type": event_type, "timestamp": format_timestamp(at), "data": data}


def parse_secret(secret: str) -> bytes:
    """The key bytes of a signing secret; ``ValueError`` saying what is wrong with it."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a signing secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"a signing secret is {SECRET_PREFIX!r} followed by base64") from None
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise ValueError(f"a signing secret holds {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} bytes, not {len(key)}")
    return key


def make_secret(key: bytes) -> str:
    """A signing secret from ``SECRET_MIN_BYTES`` or more random bytes (drawn by the caller)."""
    return SECRET_PREFIX + base64.b64encode(key).decode("ascii")
