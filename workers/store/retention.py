"""Retention: how long finished runs keep their events, their attempts' prompts and outputs, and
their rows (the operator's ``MISSIONS_RETAIN_*_DAYS``; unset keeps everything, the default).

The beat tick calls ``prune`` every tick. It works in batches, each its own short transaction:
lock up to ``batch // 10`` runs that are due (``FOR UPDATE SKIP LOCKED``: a run that a step or a
command holds is left for a later tick), delete or clear at most ``batch`` rows of them, commit.
A run is marked done (``events_pruned`` / ``outputs_pruned``) once a batch finds fewer rows than
its limit, so the partial indexes ``runs_events_unpruned`` / ``runs_outputs_unpruned`` hold only
the runs left to do and each batch starts where the work is, however long the history. ``prune``
stops after ``seconds`` (checked between batches), so one tick never holds up the next part, and
live work only ever waits for one small batch.

What is kept, and why:

- only runs with ``finished_at`` set are touched: an active or paused run has none (it is cleared
  when a run becomes active again), and the status is checked in the same statement that locks;
- a pruned run keeps its ``mission:done`` event, so a client that follows it still sees it end;
- attempts keep their status, score, tokens and cost (usage totals do not change); only
  ``prompt`` and ``output`` are cleared;
- deleting a run deletes its events, attempts, task rows and timers, and unlinks its schedule
  fires (which stay); a mission always keeps its newest run. Usage totals of a mission then count
  the runs it still has;
- a webhook delivery is a copy of its event: once it has finished (delivered, or failed for good)
  it is kept as long as events are (``MISSIONS_RETAIN_EVENTS_DAYS``, else ``_RUNS_DAYS``), counted
  from when it finished, then deleted with its tries; a pending one is never touched.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from config import Settings
from workers.store.db import Connection, Database
from workers.store.queries import query

RUNS_WITH_EVENTS = query("runs_with_events_to_prune")
PRUNE_EVENTS = query("prune_events")
MARK_EVENTS = query("mark_events_pruned")
RUNS_WITH_OUTPUTS = query("runs_with_outputs_to_prune")
PRUNE_OUTPUTS = query("prune_outputs")
MARK_OUTPUTS = query("mark_outputs_pruned")
PRUNE_DELIVERIES = query("prune_deliveries")
RUNS_TO_DELETE = query("runs_to_delete")
DELETE_RUNS = query("delete_runs")
TABLE_SIZES = query("table_sizes")
PREVIEW_EVENTS = query("retention_preview_events")
PREVIEW_OUTPUTS = query("retention_preview_outputs")
PREVIEW_RUNS = query("retention_preview_runs")
PREVIEW_DELIVERIES = query("retention_preview_deliveries")


@dataclass(frozen=True)
class Policy:
    events: timedelta | None = None  # keep a finished run's events this long (None: for ever)
    outputs: timedelta | None = None  # ... its attempts' prompts and outputs
    runs: timedelta | None = None  # ... the run itself
    batch: int = 1000  # rows per batch
    seconds: float = 0.1  # time per ``prune`` (one tick)

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        def days(value: float | None) -> timedelta | None:
            return None if value is None else timedelta(days=value)

        return cls(
            days(settings.retain_events_days),
            days(settings.retain_outputs_days),
            days(settings.retain_runs_days),
            settings.retention_batch,
            settings.retention_seconds,
        )

    @property
    def enabled(self) -> bool:
        return any(keep is not None for keep in (self.events, self.outputs, self.runs))

    @property
    def deliveries(self) -> timedelta | None:
        """How long a finished webhook delivery is kept: as long as the events it copies."""
        return self.events if self.events is not None else self.runs

    @property
    def runs_per_batch(self) -> int:
        return max(1, min(500, self.batch // 10))


@dataclass
class Pruned:
    events: int = 0  # event rows deleted (with the runs' or on their own)
    outputs: int = 0  # attempts whose prompt and output were cleared
    runs: int = 0  # runs deleted
    deliveries: int = 0  # finished webhook deliveries deleted
    batches: int = 0

    @property
    def total(self) -> int:
        return self.events + self.outputs + self.runs + self.deliveries


_Step = Callable[[Connection, datetime, "Policy", Pruned], bool]


def prune(db: Database, policy: Policy, now: datetime) -> Pruned:
    """One tick's share of retention: batches until nothing is due or ``policy.seconds`` is spent."""
    pruned = Pruned()
    if not policy.enabled:
        return pruned
    deadline = time.monotonic() + policy.seconds
    steps: list[tuple[timedelta | None, _Step]] = [
        (policy.runs, _delete_runs_batch),  # first: what it deletes need not be pruned
        (policy.events, functools.partial(_prune_batch, "events")),
        (policy.outputs, functools.partial(_prune_batch, "outputs")),
        (policy.deliveries, _prune_deliveries_batch),
    ]
    for keep, step in steps:
        if keep is None:
            continue
        while time.monotonic() < deadline:
            with db.transaction() as conn:
                more = step(conn, now - keep, policy, pruned)
            pruned.batches += 1
            if not more:
                break
    return pruned


def _run_ids(conn: Connection, statement: Any, before: datetime, policy: Policy) -> list[str]:
    rows = conn.execute(statement, {"before": before, "runs": policy.runs_per_batch}).fetchall()
    return [row["id"] for row in rows]


# What a batch of pruning runs: the due runs, the rows it deletes or clears, the mark of a run done.
_PRUNING = {
    "events": (RUNS_WITH_EVENTS, PRUNE_EVENTS, MARK_EVENTS),
    "outputs": (RUNS_WITH_OUTPUTS, PRUNE_OUTPUTS, MARK_OUTPUTS),
}


def _prune_batch(kind: str, conn: Connection, before: datetime, policy: Policy, pruned: Pruned) -> bool:
    """One batch of ``kind`` (``events`` or ``outputs``); False when no run is due."""
    due, prune_rows, mark = _PRUNING[kind]
    run_ids = _run_ids(conn, due, before, policy)
    if not run_ids:
        return False
    done = conn.execute(prune_rows, {"run_ids": run_ids, "all": False, "limit": policy.batch}).rowcount
    setattr(pruned, kind, getattr(pruned, kind) + done)
    if done < policy.batch:  # nothing of these runs is left to prune (but their mission:done)
        conn.execute(mark, {"run_ids": run_ids})
    return True


def _delete_runs_batch(conn: Connection, before: datetime, policy: Policy, pruned: Pruned) -> bool:
    run_ids = _run_ids(conn, RUNS_TO_DELETE, before, policy)
    if not run_ids:
        return False
    # The events first, in bounded batches: the cascade would delete them all in one statement.
    deleted = conn.execute(PRUNE_EVENTS, {"run_ids": run_ids, "all": True, "limit": policy.batch}).rowcount
    pruned.events += deleted
    if deleted < policy.batch:
        pruned.runs += conn.execute(DELETE_RUNS, {"run_ids": run_ids}).rowcount
    return True


def _prune_deliveries_batch(conn: Connection, before: datetime, policy: Policy, pruned: Pruned) -> bool:
    deleted = conn.execute(PRUNE_DELIVERIES, {"before": before, "limit": policy.batch}).rowcount
    pruned.deliveries += deleted
    return deleted == policy.batch  # (a full batch: there may be more)


@dataclass(frozen=True)
class TableSize:
    name: str
    rows: int  # the planner's estimate; -1 until the table is first analysed
    total_bytes: int
    index_bytes: int


def table_sizes(conn: Connection) -> list[TableSize]:
    """Every table of the schema, largest first."""
    return [
        TableSize(row["name"], int(row["rows"]), int(row["total_bytes"]), int(row["index_bytes"]))
        for row in conn.execute(TABLE_SIZES).fetchall()
    ]


@dataclass(frozen=True)
class Preview:
    """What retention would delete now (exact counts; on a large database this reads a while)."""

    event_runs: int = 0  # runs whose events would be pruned
    events: int = 0  # ... and those events (their mission:done kept)
    output_runs: int = 0
    outputs: int = 0  # attempts whose prompt and output would be cleared
    runs: int = 0  # runs that would be deleted
    run_attempts: int = 0  # ... with their attempts
    run_events: int = 0  # ... and their events
    deliveries: int = 0  # finished webhook deliveries that would be deleted


def preview(conn: Connection, policy: Policy, now: datetime) -> Preview:
    counts: dict[str, int] = {}

    def one(statement: Any, keep: timedelta) -> dict[str, Any]:
        row = conn.execute(statement, {"before": now - keep}).fetchone()
        assert row is not None  # (an aggregate always has its row)
        return dict(row)

    if policy.runs is not None:
        row = one(PREVIEW_RUNS, policy.runs)
        counts |= {"runs": row["runs"], "run_attempts": row["attempts"], "run_events": row["events"]}
    if policy.events is not None:
        row = one(PREVIEW_EVENTS, policy.events)
        counts |= {"event_runs": row["runs"], "events": row["rows"]}
    if policy.outputs is not None:
        row = one(PREVIEW_OUTPUTS, policy.outputs)
        counts |= {"output_runs": row["runs"], "outputs": row["rows"]}
    if policy.deliveries is not None:
        counts |= {"deliveries": one(PREVIEW_DELIVERIES, policy.deliveries)["rows"]}
    return Preview(**{key: int(value) for key, value in counts.items()})
