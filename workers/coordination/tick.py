"""The beat tick: fire due timers and repair what was lost.

Run every second or so (``missions.tick``). First it fires due schedules (``workers.coordination.schedules``). Each part is safe to run from several processes at
once: timers are taken with ``FOR UPDATE SKIP LOCKED`` and deleted in the same transaction as the
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

from orchestrator.engine import DeadlineReached, Event, RetryDue, TaskClaimed, TaskTimedOut, WorkerLost
from workers.coordination import step as coordinator
from workers.store import run_state as run_store
from workers.coordination import schedules
from workers.messaging.dispatch import TASK_QUEUE, Dispatcher
from workers.store.missions import Limits
from workers.wiring import Services

log = logging.getLogger(__name__)

BATCH = 200

_TAKE_TIMER = """
DELETE FROM timers WHERE id = (
    SELECT id FROM timers WHERE due_at <= %(now)s ORDER BY due_at FOR UPDATE SKIP LOCKED LIMIT 1
) RETURNING run_id, kind, key
"""

_LOST_RUNNING = """
SELECT run_id, task_id, attempt, worker, claimed_at FROM attempts
 WHERE status = 'running' AND heartbeat_at < %(cutoff)s
 ORDER BY heartbeat_at LIMIT %(limit)s
"""

_MARK_LOST = """
UPDATE attempts SET status = 'lost', error = 'worker stopped heart-beating', finished_at = %(now)s
 WHERE run_id = %(run_id)s AND task_id = %(task_id)s AND attempt = %(attempt)s AND status = %(was)s
RETURNING 1
"""

_STALE_ASSESSING = """
UPDATE attempts SET heartbeat_at = %(now)s
 WHERE (run_id, task_id, attempt) IN (
    SELECT run_id, task_id, attempt FROM attempts
     WHERE status = 'assessing' AND coalesce(heartbeat_at, finished_at) < %(cutoff)s
     LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING run_id, task_id, attempt
"""

_UNSENT = """
UPDATE attempts SET sent_at = %(now)s
 WHERE (run_id, task_id, attempt) IN (
    SELECT run_id, task_id, attempt FROM attempts
     WHERE status = 'queued' AND coalesce(sent_at, created_at) < %(cutoff)s
     ORDER BY created_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING run_id, task_id, attempt
"""


@dataclass
class TickReport:
    scheduled: int = 0
    timers: int = 0
    lost: int = 0
    reassessed: int = 0
    resent: int = 0


def timer_event(kind: str, key: str) -> Event | None:
    if kind == "deadline":
        return DeadlineReached()
    task_id, _, attempt = key.rpartition(":")
    if not task_id or not attempt.isdigit():
        return None
    if kind == "retry":
        return RetryDue(task_id, int(attempt))
    if kind == "timeout":
        return TaskTimedOut(task_id, int(attempt))
    return None


def fire_timers(services: Services, dispatcher: Dispatcher, now: datetime, limit: int = BATCH) -> int:
    fired = 0
    for _ in range(limit):
        with services.transaction() as conn:
            row = conn.execute(_TAKE_TIMER, {"now": now}).fetchone()
            if row is None:
                break
            event = timer_event(row["kind"], row["key"])
            outcome = coordinator.step(conn, row["run_id"], event, now) if event is not None else None
        dispatcher.after_commit(outcome)
        fired += 1
    return fired


def reap_lost_workers(services: Services, dispatcher: Dispatcher, now: datetime) -> int:
    cutoff = now - timedelta(seconds=services.settings.worker_lost_seconds)
    with services.transaction() as conn:
        candidates = conn.execute(_LOST_RUNNING, {"cutoff": cutoff, "limit": BATCH}).fetchall()
    lost = 0
    for row in candidates:
        with services.transaction() as conn:
            # Marked in the statement that locks the run, like a claim; a racing tick's mark matches
            # nothing. The attempt row says it was claimed; its worker may have died before telling
            # the run (execution._Claim), so the claim goes first: a started side-effecting task
            # must wait for approval, not run again.
            claimed = TaskClaimed(row["task_id"], row["attempt"], row["worker"] or "")
            outcome = coordinator.step(conn, row["run_id"], WorkerLost(row["task_id"], row["attempt"]), now,
                                       guard=run_store.Guard(_MARK_LOST, {**row, "now": now, "was": "running"}),
                                       before=((claimed, row["claimed_at"] or now),))
            if outcome is None or outcome.guard is None:
                continue
        log.warning("attempt %s of %s in run %s lost its worker", row["attempt"], row["task_id"], row["run_id"])
        dispatcher.after_commit(outcome)
        lost += 1
    return lost


def resend_stale_assessments(services: Services, dispatcher: Dispatcher, now: datetime) -> int:
    cutoff = now - timedelta(seconds=services.settings.worker_lost_seconds)
    with services.transaction() as conn:
        rows = conn.execute(_STALE_ASSESSING, {"cutoff": cutoff, "now": now, "limit": BATCH}).fetchall()
    for row in rows:
        dispatcher.send_assessment(row["run_id"], row["task_id"], row["attempt"])
    return len(rows)


def broker_queue_empty(services: Services) -> bool:
    try:
        return int(services.redis.llen(TASK_QUEUE)) == 0
    except Exception:
        return False


def resend_lost_messages(services: Services, dispatcher: Dispatcher, now: datetime) -> int:
    """Queued attempts older than ``requeue_seconds`` are re-sent, but only while the broker queue
    is empty: a long queue means they are waiting, not lost."""
    if not broker_queue_empty(services):
        return 0
    cutoff = now - timedelta(seconds=services.settings.requeue_seconds)
    with services.transaction() as conn:
        rows = conn.execute(_UNSENT, {"cutoff": cutoff, "now": now, "limit": BATCH}).fetchall()
    for row in rows:
        dispatcher.send_attempt(row["run_id"], row["task_id"], row["attempt"])
    if rows:
        log.warning("re-sent %d queued attempts whose messages were lost", len(rows))
    return len(rows)


def fire_schedules(services: Services, dispatcher: Dispatcher, now: datetime) -> int:
    settings = services.settings
    limits = Limits(max_tasks=settings.max_tasks, allow_commands=settings.allow_commands)
    return schedules.fire_due(services.transaction, dispatcher.after_commit, limits, now)


def tick(services: Services, dispatcher: Dispatcher, now: datetime) -> TickReport:
    report = TickReport()
    report.scheduled = fire_schedules(services, dispatcher, now)
    report.timers = fire_timers(services, dispatcher, now)
    report.lost = reap_lost_workers(services, dispatcher, now)
    report.reassessed = resend_stale_assessments(services, dispatcher, now)
    report.resent = resend_lost_messages(services, dispatcher, now)
    return report
