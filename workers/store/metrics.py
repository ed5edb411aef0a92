"""The figures ``/metrics`` reads from Postgres at scrape time (every project's)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workers.store.db import Database
from workers.store.queries import query

MISSIONS_BY_STATUS = query("missions_by_status")
TASKS_BY_STATUS = query("tasks_by_status")
ATTEMPTS_BY_STATUS = query("attempts_by_status")
TASK_DURATIONS = query("task_durations")
QUEUE_WAITS = query("queue_waits")
SCORES = query("assessment_scores")
TICK_LAG = query("tick_lag")
WEBHOOK_DELIVERIES = query("webhook_deliveries_by_status")


@dataclass(frozen=True)
class Snapshot:
    """Counts by status, histogram rows (``bucket``, ``n``, ``total``), the tick lag in seconds, webhook
    deliveries by status and how overdue the oldest due pending delivery is (seconds)."""

    missions: dict[str, int]
    tasks: dict[str, int]
    attempts: list[dict[str, Any]]
    durations: list[dict[str, Any]]
    waits: list[dict[str, Any]]
    scores: list[dict[str, Any]]
    tick_lag: float
    deliveries: dict[str, int]
    deliveries_overdue: float


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
        lag_row = conn.execute(TICK_LAG).fetchone()
        hooks = conn.execute(WEBHOOK_DELIVERIES).fetchall()
    overdue = next((float(r["overdue"]) for r in hooks if r["status"] == "pending"), 0.0)
    return Snapshot(
        missions,
        tasks,
        attempts,
        durations,
        waits,
        scores,
        float(lag_row["lag"]) if lag_row else 0.0,
        {r["status"]: r["n"] for r in hooks},
        overdue,
    )
