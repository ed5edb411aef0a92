"""The shell's clock: UTC-aware ``now`` (the core never reads a clock; it is handed this)."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
