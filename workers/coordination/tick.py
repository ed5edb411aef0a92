"""The beat tick: fire due timers and repair what was lost.

Run every second or so (``missions.tick``). First it fires due schedules
(``workers.coordination.schedules``). Each part is safe to run from several processes at once:
timers are taken with ``FOR UPDATE SKIP LOCKED`` and deleted in the same transaction as the
coordinator step they feed; lost attempts are marked in the same transaction as their event.

- due timers (``orchestrator.engine.timer_event``): retry backoff (``RetryDue``), task timeouts
  (``TaskTimedOut``), checkpoint and approval timeouts, delays (``DelayElapsed``), deadlines
  (``DeadlineReached``);
- lost workers: a running attempt whose heartbeat is older than ``worker_lost_seconds``
  (``WorkerLost``); an assessment whose heartbeat stopped is simply run again;
- agent slots: the free project-wide slots of reusable agents (``workers.store.slots``) go to their
  waiters, in case the step that freed one committed but its grant never ran;
- webhook deliveries: a pending delivery that is due (its backoff passed, or its worker died
  mid-attempt) and has no message on its way since ``requeue_seconds`` is sent (again);
- retention, last: what the ``MISSIONS_RETAIN_*_DAYS`` settings no longer keep is deleted in small
  batches for at most ``retention_seconds`` (``workers.store.retention``; off by default);
- lost messages: a queued attempt that no worker has claimed for ``requeue_seconds`` is sent again
  (the message was never sent, or Redis lost it); claims make duplicates harmless. While the broker
  queue is not empty the attempt may just be waiting in it, so the gaps between the re-sends of one
  attempt double (``attempts.take_unsent``): a lost message goes again after about as long as its
  attempt had already waited, and a long, healthy queue gets a few duplicates per attempt, not one
  per tick;
- expired idempotency keys: stored responses past their time are deleted in small batches
  (``IDEMPOTENCY_BATCH`` rows a statement, at most ``IDEMPOTENCY_BATCHES`` statements a tick), so
  that a backlog never makes one tick long.

**One failing item never stops the others.** Each part runs in its own guard, and within a part
each item (a timer, a lost attempt, a mission's fire, a re-send) in its own: an exception is logged
with the item's ids, counted (``missions_isolated_failures_total{part=...}`` on ``GET /metrics``,
``TickReport.failed``) and the item is skipped. An item whose failure would leave it first in line
again is postponed, so that it is neither retried in a hot loop nor holds back the others tick
after tick: a timer whose step raised is taken again ``FAILED_TIMER_DELAY`` later (its step's writes
are rolled back to a savepoint, and the timer, taken in the same transaction, is scheduled again),
a lost attempt whose step raised gets a fresh heartbeat (looked at again one worker-lost window
later), a mission whose fire raised is fired again ``schedules.FAILED_FIRE_DELAY`` later. A
transient database failure (``workers.store.db.is_transient``: Postgres restarting, no pooled
connection) is different: nothing is postponed (it was not the item's fault), and the part stops for
this tick, since its next items would only wait for the same database; the next part still runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from config import Settings
from orchestrator.engine import TaskClaimed, WorkerLost, timer_event
from workers.coordination import schedules
from workers.coordination.advance import Coordinator
from workers.coordination.outcome import Resender
from workers.store import attempts, idempotency, retention, runs, slots, timers, webhooks
from workers.store.db import is_transient
from workers.store.missions import Limits
from workers.support import metrics, tracing

log = logging.getLogger(__name__)

BATCH = 200
FAILED_TIMER_DELAY = timedelta(seconds=60)  # a timer whose step raised is taken again this much later
# While the broker queue is not empty, the gap between two re-sends of one queued attempt doubles up
# to this many ``requeue_seconds`` (320 s by default): a lost message waits at most that long.
RESEND_BACKOFF_LIMIT = 32
IDEMPOTENCY_BATCH = 500  # expired idempotency keys deleted by one statement
IDEMPOTENCY_BATCHES = 4  # statements a tick at most


@dataclass
class TickReport:
    scheduled: int = 0
    timers: int = 0
    lost: int = 0
    reassessed: int = 0
    resent: int = 0
    granted: int = 0  # attempts given a project-wide agent slot
    expired_keys: int = 0
    pruned: int = 0  # rows retention deleted or cleared
    webhooks: int = 0
    failed: int = 0  # items (or parts) that raised, were logged and skipped


class Failures:
    """The failures of one tick. Each item that raises is logged with its ids where it is caught
    (``log.exception``, so that the traceback goes with it), then ``add``-ed: counted by part in the
    metrics and in the tick's report."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, part: str) -> None:
        metrics.count_isolated(part)
        self.count += 1


def fire_timers(coordinator: Coordinator, now: datetime, limit: int = BATCH, failures: Failures | None = None) -> int:
    """Feed each due timer to its run, in the transaction that takes (deletes) it.

    A timer whose step raises is not fired: the step's writes roll back to a savepoint and the timer
    is scheduled again ``FAILED_TIMER_DELAY`` from now in the same transaction (which holds it, so
    no other tick takes it meanwhile), so the next due timers go on and it does not come first
    again next tick. On a transient database failure the whole transaction rolls back (the timer
    stays due) and the timers wait for the next tick.

    While tracing is on, each timer's step and what it sends after commit are in its run's trace
    (``tracing.continued``): the span opens once the timer is taken, and closes after the send."""
    failures = failures if failures is not None else Failures()
    fired = 0
    for _ in range(limit):
        taken: dict[str, Any] | None = None
        try:
            with ExitStack() as in_run_trace, coordinator.transaction() as uow:
                taken = timers.take_due(uow.conn, now)
                if taken is None:
                    break
                run_id, kind, key = taken["run_id"], taken["kind"], taken["key"]
                in_run_trace.enter_context(
                    tracing.continued(
                        taken["traceparent"],
                        "missions.timer",
                        {**tracing.ids(run_id), "missions.timer": kind, "missions.timer_key": key},
                    )
                )
                event = timer_event(kind, key)
                try:
                    with uow.savepoint():  # (drops the sends the step queued, with its writes)
                        if event is not None:
                            uow.advance(run_id, event, now)
                except Exception as exc:
                    if is_transient(exc):
                        raise
                    log.exception(
                        "tick: timer %s %s of run %s failed; taken again in %s", kind, key, run_id, FAILED_TIMER_DELAY
                    )
                    failures.add("timers")
                    timers.apply(uow.conn, run_id, [timers.TimerChange(kind, key, now + FAILED_TIMER_DELAY)])
                    continue
        except Exception:
            if taken is None:
                log.exception("tick: taking a due timer failed; the timers wait for the next tick")
            else:
                log.exception(
                    "tick: timer %s %s of run %s failed; left due, the timers wait for the next tick",
                    taken["kind"],
                    taken["key"],
                    taken["run_id"],
                )
            failures.add("timers")
            break  # the database failed: the other timers wait for the next tick
        fired += 1
    return fired


def reap_lost_workers(
    coordinator: Coordinator, settings: Settings, now: datetime, failures: Failures | None = None
) -> int:
    failures = failures if failures is not None else Failures()
    cutoff = now - timedelta(seconds=settings.worker_lost_seconds)
    with coordinator.db.transaction() as conn:
        candidates = attempts.lost_running(conn, cutoff, BATCH)
    lost = 0
    for row in candidates:
        run_id, task_id, attempt = row["run_id"], row["task_id"], row["attempt"]
        try:
            with _repair(row, "lost_worker"), coordinator.transaction() as uow:
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
        except Exception as exc:
            log.exception("tick: reaping lost attempt %s of %s in run %s failed; skipped", attempt, task_id, run_id)
            failures.add("lost_workers")
            if is_transient(exc):
                break  # the database failed: the other lost attempts wait for the next tick
            _postpone_lost(coordinator, run_id, task_id, attempt, now)
            continue
        if outcome is None or outcome.guard is None:
            continue
        log.warning("attempt %s of %s in run %s lost its worker", attempt, task_id, run_id)
        lost += 1
    return lost


def _postpone_lost(coordinator: Coordinator, run_id: str, task_id: str, attempt: int, now: datetime) -> None:
    """A fresh heartbeat for a lost attempt whose reaping raised: the scan, oldest heartbeat first,
    finds it again one worker-lost window later instead of first in line every tick."""
    try:
        with coordinator.db.transaction() as conn:
            attempts.postpone_lost(conn, run_id, task_id, attempt, now)
    except Exception:
        log.warning("could not postpone lost attempt %s of %s in run %s", attempt, task_id, run_id, exc_info=True)


def resend_stale_assessments(
    coordinator: Coordinator, resender: Resender, settings: Settings, now: datetime, failures: Failures | None = None
) -> int:
    """Assessments whose worker went silent are sent again (taken rows are touched, so a failed
    send is tried again one worker-lost window later)."""
    failures = failures if failures is not None else Failures()
    cutoff = now - timedelta(seconds=settings.worker_lost_seconds)
    with coordinator.db.transaction() as conn:
        rows = attempts.take_stale_assessing(conn, cutoff, now, BATCH)
    sent = 0
    for row in rows:
        run_id, task_id, attempt = row["run_id"], row["task_id"], row["attempt"]
        try:
            with _repair(row, "stale_assessment"):
                resender.send_assessment(run_id, task_id, attempt)
        except Exception:
            log.exception(
                "tick: re-sending the assessment of attempt %s of %s in run %s failed; skipped",
                attempt,
                task_id,
                run_id,
            )
            failures.add("stale_assessments")
            continue
        sent += 1
    return sent


def resend_lost_messages(
    coordinator: Coordinator, resender: Resender, settings: Settings, now: datetime, failures: Failures | None = None
) -> int:
    """Queued attempts unclaimed for ``requeue_seconds`` are sent again, whatever the queue length.
    While the broker queue is not empty (or the broker cannot say), each attempt's re-sends back off
    (see the module docstring): a long queue means most of them are waiting, not lost."""
    failures = failures if failures is not None else Failures()
    requeue = timedelta(seconds=settings.requeue_seconds)
    backoff_cap = timedelta(0) if resender.queue_empty() else requeue * RESEND_BACKOFF_LIMIT
    with coordinator.db.transaction() as conn:
        rows = attempts.take_unsent(conn, now - requeue, now, BATCH, backoff_cap=backoff_cap)
    sent = 0
    for row in rows:
        run_id, task_id, attempt = row["run_id"], row["task_id"], row["attempt"]
        try:
            with _repair(row, "lost_message"):
                resender.send_attempts(run_id, [(task_id, attempt)])
        except Exception:  # (its sent_at moved on: it goes again after its backoff)
            log.exception("tick: re-sending attempt %s of %s in run %s failed; skipped", attempt, task_id, run_id)
            failures.add("lost_messages")
            continue
        sent += 1
    if sent:
        log.warning("re-sent %d queued attempts whose messages were lost", sent)
    return sent


def send_due_deliveries(
    coordinator: Coordinator, resender: Resender, settings: Settings, now: datetime, failures: Failures | None = None
) -> int:
    """Webhook deliveries that are due and have no message on its way are sent (their ``sent_at``
    moved on when taken: a failed send is tried again ``requeue_seconds`` later)."""
    failures = failures if failures is not None else Failures()
    requeue = timedelta(seconds=settings.requeue_seconds)
    with coordinator.db.transaction() as conn:
        due = webhooks.take_due(conn, now, now - requeue, BATCH)
    if due and not resender.send_deliveries(due):
        failures.add("webhooks")
        return 0
    return len(due)


def grant_waiting_slots(
    coordinator: Coordinator, resender: Resender, now: datetime, failures: Failures | None = None
) -> int:
    """Grant the free slots of every reusable agent that has waiters, and send what was granted.
    Normally the step that frees a slot grants it; this covers a process that died in between.
    While tracing is on, each run's attempts are sent in its trace (its runs' trace contexts are
    read in the grant's transaction)."""
    failures = failures if failures is not None else Failures()
    with coordinator.db.transaction() as conn:
        pairs = slots.agents_waiting(conn, BATCH)
    granted = 0
    for project_id, agent in pairs:
        try:
            by_run: dict[str, list[tuple[str, int]]] = {}
            with coordinator.db.transaction() as conn:
                keys = slots.grant(conn, project_id, agent, now)
                for run_id, task_id, attempt in keys:
                    by_run.setdefault(run_id, []).append((task_id, attempt))
                traces = runs.run_traces(conn, list(by_run)) if by_run and tracing.enabled() else {}
            for run_id, items in by_run.items():
                with tracing.continued(traces.get(run_id), "missions.repair", _repair_ids(run_id, "agent_slot")):
                    resender.send_attempts(run_id, items)  # (a failed send is re-sent as a lost message)
        except Exception as exc:
            log.exception("tick: granting the slots of agent %s in project %s failed; skipped", agent, project_id)
            failures.add("agent_slots")
            if is_transient(exc):
                break
            continue
        granted += len(keys)
    return granted


def fire_schedules(
    coordinator: Coordinator, settings: Settings, now: datetime, failures: Failures | None = None
) -> int:
    # Every limit the API validates by (profiles, the judge model, ...): a fire must accept what create did.
    limits = Limits.from_settings(settings)
    failed: list[str] = []
    try:
        return schedules.fire_due(coordinator, limits, now, failed=failed)
    finally:
        if failures is not None:
            failures.count += len(failed)  # (logged and counted by part there)


def delete_expired_idempotency_keys(coordinator: Coordinator, now: datetime) -> int:
    """Expired idempotency keys, in batches of ``IDEMPOTENCY_BATCH`` (each its own commit, so no
    long lock), until a batch comes back short or ``IDEMPOTENCY_BATCHES`` ran."""
    deleted = 0
    for _ in range(IDEMPOTENCY_BATCHES):
        with coordinator.db.autocommit() as conn:
            batch = idempotency.delete_expired(conn, now, IDEMPOTENCY_BATCH)
        deleted += batch
        if batch < IDEMPOTENCY_BATCH:
            break
    return deleted


def apply_retention(coordinator: Coordinator, settings: Settings, now: datetime) -> int:
    """Delete what the retention settings no longer keep, for at most ``retention_seconds``
    (``workers.store.retention``); a failed batch rolls back alone and the next tick goes on."""
    pruned = retention.prune(coordinator.db, retention.Policy.from_settings(settings), now)
    if pruned.total:
        log.info(
            "retention: deleted %d runs, %d events and %d webhook deliveries, cleared %d attempts' prompts and"
            " outputs (%d batches)",
            pruned.runs,
            pruned.events,
            pruned.deliveries,
            pruned.outputs,
            pruned.batches,
        )
    return pruned.total


def _repair(row: dict[str, Any], repair: str) -> AbstractContextManager[Any]:
    """The span of one repair of an attempt (its step, or its message sent again), in its run's
    trace (``tracing.continued``, from the ``traceparent`` the tick's statement read with it):
    the attempt that message starts joins the run's trace."""
    return tracing.continued(
        row["traceparent"],
        "missions.repair",
        {**_repair_ids(row["run_id"], repair), "missions.task_id": row["task_id"], "missions.attempt": row["attempt"]},
    )


def _repair_ids(run_id: str, repair: str) -> dict[str, Any]:
    return {**tracing.ids(run_id), "missions.repair": repair}


def _part(failures: Failures, part: str, run: Callable[[], int]) -> int:
    """Run one part of the tick in its own guard: when it raises (its items are guarded on their
    own, so this is its scan failing), the next part still runs."""
    try:
        return run()
    except Exception:
        log.exception("tick: the %s part failed; the next part runs", part)
        failures.add(part)
        return 0


def tick(coordinator: Coordinator, resender: Resender, settings: Settings, now: datetime) -> TickReport:
    report = TickReport()
    failures = Failures()
    report.scheduled = _part(failures, "schedules", lambda: fire_schedules(coordinator, settings, now, failures))
    report.timers = _part(failures, "timers", lambda: fire_timers(coordinator, now, failures=failures))
    report.lost = _part(failures, "lost_workers", lambda: reap_lost_workers(coordinator, settings, now, failures))
    report.reassessed = _part(
        failures,
        "stale_assessments",
        lambda: resend_stale_assessments(coordinator, resender, settings, now, failures),
    )
    report.granted = _part(failures, "agent_slots", lambda: grant_waiting_slots(coordinator, resender, now, failures))
    report.resent = _part(
        failures, "lost_messages", lambda: resend_lost_messages(coordinator, resender, settings, now, failures)
    )
    report.webhooks = _part(
        failures, "webhooks", lambda: send_due_deliveries(coordinator, resender, settings, now, failures)
    )
    report.expired_keys = _part(failures, "idempotency_keys", lambda: delete_expired_idempotency_keys(coordinator, now))
    # Last: what is left of the tick's time goes to deleting history (bounded by its own setting).
    report.pruned = _part(failures, "retention", lambda: apply_retention(coordinator, settings, now))
    report.failed = failures.count
    return report
