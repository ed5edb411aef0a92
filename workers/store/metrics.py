"""The figures ``/metrics`` reads from Postgres at scrape time (every project's)."""

from __future__ import annotations

from dataclasses import dataclass

from workers.store.db import Connection, Database
from workers.store.queries import query

MISSIONS_BY_STATUS = query("missions_by_status")
TASKS_BY_STATUS = query("tasks_by_status")
TICK_LAG = query("tick_lag")
QUEUED_ATTEMPTS = query("queued_attempts")
WEBHOOK_DELIVERIES = query("webhook_deliveries_by_status")


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
    """Missions and the tasks of live runs by status, the tick lag in seconds, the queue, webhook
    deliveries not delivered (pending, failed) by status and how overdue the oldest due pending
    delivery is (seconds)."""

    missions: dict[str, int]
    tasks: dict[str, int]
    tick_lag: float
    queue: QueueDepth
    deliveries: dict[str, int]
    deliveries_overdue: float


def snapshot(db: Database, *, timeout: float = 5.0) -> Snapshot:
    """Every figure in one connection (waiting at most ``timeout`` seconds for one). Each reads only
    the present: the missions, the runs still going (partial index), the due timers and the queued
    attempts (partial indexes); what happened over time is counted as it happens
    (``workers.support.metrics``), so a scrape costs the same however long the history."""
    with db.connection(timeout=timeout) as conn:
        missions = {r["status"]: r["n"] for r in conn.execute(MISSIONS_BY_STATUS).fetchall()}
        tasks = {r["status"]: r["n"] for r in conn.execute(TASKS_BY_STATUS).fetchall() if r["status"]}
        lag = tick_lag(conn)
        queue = queue_depth(conn)
        hooks = conn.execute(WEBHOOK_DELIVERIES).fetchall()
    overdue = next((float(r["overdue"]) for r in hooks if r["status"] == "pending"), 0.0)
    return Snapshot(missions, tasks, lag, queue, {r["status"]: r["n"] for r in hooks}, overdue)
