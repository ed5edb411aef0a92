"""The beat tick: fire due timers and repair what was lost.

Run every second or so (``missions.tick``). First it fires due schedules
(``workers.coordination.schedules``). Each part is safe to run from several processes at once:
timers are taken with ``FOR UPDATE SKIP LOCKED`` and deleted in the same transaction as the
coordinator step they feed; lost attempts are marked in the same transaction as their event.

- due timers: retry backoff (``RetryDue``), task timeouts (``TaskTimedOut``), deadlines
  (``DeadlineReached``);
- lost workers: a running attempt whose heartbeat is older than ``worker_lost_seconds``
  (``WorkerLost``); an assessment whose heartbeat stopped is simply run again;
- lost messages: a queued attempt that no worker has claimed while the broker queue is empty
  (the message was never sent, or Redis lost it) is sent again; claims make duplicates harmless.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from config import Settings
from orchestrator.engine import TaskClaimed, WorkerLost, timer_event
from workers.coordination import schedules
from workers.coordination.advance import Coordinator
from workers.coordination.outcome import Resender
from workers.store import attempts, timers
from workers.store.missions import Limits

log = logging.getLogger(__name__)

BATCH = 200


@dataclass
class TickReport:
    scheduled: int = 0
    timers: int = 0
    lost: int = 0
    reassessed: int = 0
    resent: int = 0


def fire_timers(coordinator: Coordinator, now: datetime, limit: int = BATCH) -> int:
    """Feed each due timer to its run, in the transaction that takes (deletes) it."""
    fired = 0
    for _ in range(limit):
        with coordinator.transaction() as uow:
            row = timers.take_due(uow.conn, now)
            if row is None:
                break
            event = timer_event(row["kind"], row["key"])
            if event is not None:
                uow.advance(row["run_id"], event, now)
        fired += 1
    return fired


def reap_lost_workers(coordinator: Coordinator, settings: Settings, now: datetime) -> int:
    cutoff = now - timedelta(seconds=settings.worker_lost_seconds)
    with coordinator.db.transaction() as conn:
        candidates = attempts.lost_running(conn, cutoff, BATCH)
    lost = 0
    for row in candidates:
        run_id, task_id, attempt = row["run_id"], row["task_id"], row["attempt"]
        with coordinator.transaction() as uow:
            # Marked in the statement that locks the run, like a claim; a racing tick's mark matches
            # nothing. The attempt row says it was claimed; its worker may have died before telling
            # the run (executor._Claim), so the claim goes first: a started side-effecting task
            # must wait for approval, not run again.
            claimed = TaskClaimed(task_id, attempt, row["worker"] or "")
            outcome = uow.advance(
                run_id,
                WorkerLost(task_id, attempt),
                now,
                guard=attempts.mark_lost(run_id, task_id, attempt, now=now),
                before=((claimed, row["claimed_at"] or now),),
            )
        if outcome is None or outcome.guard is None:
            continue
        log.warning("attempt %s of %s in run %s lost its worker", attempt, task_id, run_id)
        lost += 1
    return lost


def resend_stale_assessments(coordinator: Coordinator, resender: Resender, settings: Settings, now: datetime) -> int:
    cutoff = now - timedelta(seconds=settings.worker_lost_seconds)
    with coordinator.db.transaction() as conn:
        rows = attempts.take_stale_assessing(conn, cutoff, now, BATCH)
    for row in rows:
        resender.send_assessment(row["run_id"], row["task_id"], row["attempt"])
    return len(rows)


def resend_lost_messages(coordinator: Coordinator, resender: Resender, settings: Settings, now: datetime) -> int:
    """Queued attempts older than ``requeue_seconds`` are re-sent, but only while the broker queue
    is empty: a long queue means they are waiting, not lost."""
    if not resender.queue_empty():
        return 0
    cutoff = now - timedelta(seconds=settings.requeue_seconds)
    with coordinator.db.transaction() as conn:
        rows = attempts.take_unsent(conn, cutoff, now, BATCH)
    for row in rows:
        resender.send_attempts(row["run_id"], [(row["task_id"], row["attempt"])])
    if rows:
        log.warning("re-sent %d queued attempts whose messages were lost", len(rows))
    return len(rows)


def fire_schedules(coordinator: Coordinator, settings: Settings, now: datetime) -> int:
    limits = Limits.from_settings(settings)
    return schedules.fire_due(coordinator, limits, now)


def tick(coordinator: Coordinator, resender: Resender, settings: Settings, now: datetime) -> TickReport:
    report = TickReport()
    report.scheduled = fire_schedules(coordinator, settings, now)
    report.timers = fire_timers(coordinator, now)
    report.lost = reap_lost_workers(coordinator, settings, now)
    report.reassessed = resend_stale_assessments(coordinator, resender, settings, now)
    report.resent = resend_lost_messages(coordinator, resender, settings, now)
    return report
