"""The figures ``/metrics`` reads from Postgres at scrape time (every project's)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workers.store.db import Connection, Database
from workers.store.queries import query

MISSIONS_BY_STATUS = query("missions_by_status")
TASKS_BY_STATUS = query("tasks_by_status")
ATTEMPTS_BY_STATUS = query("attempts_by_status")
TASK_DURATIONS = query("task_durations")
QUEUE_WAITS = query("queue_waits")
SCORES = query("assessment_scores")
TICK_LAG = query("tick_lag")
QUEUED_ATTEMPTS = query("queued_attempts")


@dataclass(frozen=True)
class QueueDepth:
    """Queued attempts (waiting for a worker) and the age of the oldest, in seconds (0 when none)."""

    queued: int
    oldest_seconds: float


def queue_depth(conn: Connection) -> QueueDepth:
    row = conn.execute(QUEUED_ATTEMPTS).fetchone()
    return QueueDepth(int(row["n"]), float(row["oldest"])) if row else QueueDepth(0, 0.0)


def tick_lag(conn: Connection) -> float:
    """How overdue the most overdue timer is, in seconds (0 when the tick keeps up)."""
    row = conn.execute(TICK_LAG).fetchone()
    return float(row["lag"]) if row else 0.0


@dataclass(frozen=True)
class Snapshot:
    """Counts by status, histogram rows (``bucket``, ``n``, ``total``) and the tick lag in seconds."""

    missions: dict[str, int]
    tasks: dict[str, int]
    attempts: list[dict[str, Any]]
    durations: list[dict[str, Any]]
    waits: list[dict[str, Any]]
    scores: list[dict[str, Any]]
    tick_lag: float
    queue: QueueDepth


def snapshot(
    db: Database,
    *,
    duration_bounds: Sequence[float],
    wait_bounds: Sequence[float],
    score_bounds: Sequence[float],
    timeout: float = 5.0,
) -> Snapshot:
    """Every figure in one connection (waiting at most ``timeout`` seconds for one)."""
    with db.connection(timeout=timeout) as conn:
        missions = {r["status"]: r["n"] for r in conn.execute(MISSIONS_BY_STATUS).fetchall()}
        tasks = {r["status"]: r["n"] for r in conn.execute(TASKS_BY_STATUS).fetchall() if r["status"]}
        attempts = [dict(r) for r in conn.execute(ATTEMPTS_BY_STATUS).fetchall()]
        durations = [dict(r) for r in conn.execute(TASK_DURATIONS, {"bounds": list(duration_bounds)}).fetchall()]
        waits = [dict(r) for r in conn.execute(QUEUE_WAITS, {"bounds": list(wait_bounds)}).fetchall()]
        scores = [dict(r) for r in conn.execute(SCORES, {"bounds": list(score_bounds)}).fetchall()]
        lag = tick_lag(conn)
        queue = queue_depth(conn)
    return Snapshot(missions, tasks, attempts, durations, waits, scores, lag, queue)
