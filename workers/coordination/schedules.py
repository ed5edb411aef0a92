"""Scheduled missions: when they fire next, and firing them from the tick.

``next_run_at`` is an indexed column on ``missions``, computed by ``orchestrator.schedule`` when
a schedule is set or changed and advanced on every fire. The tick locks each due mission row
(``FOR UPDATE SKIP LOCKED``, re-checking it is still due) and records every fire in
``schedule_fires`` under a unique (mission, fire time) before starting its run, so several beats
or a repeated tick can never start two runs for one fire.

A mission whose fire raises does not stop the others: its transaction rolls back, the failure is
logged and counted (``missions_isolated_failures_total{part="schedules"}``), and the next mission
is fired. A run that cannot be started (an error other than the database's) skips that fire, with
the error recorded, like a mission that no longer validates. Any other failure (planning the fires
itself) postpones the mission's next fire by ``FAILED_FIRE_DELAY``, so that it does not come first
among the due missions again at every tick; a transient database failure postpones nothing and
leaves the other missions to the next tick.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from orchestrator.engine import RUNNING_MISSION_STATUSES, MissionStatus
from orchestrator.schedule import plan_fires
from workers.coordination import runs
from workers.coordination.advance import Coordinator, UnitOfWork
from workers.coordination.outcome import AfterCommit
from workers.store import schedules
from workers.store.db import is_transient
from workers.store.missions import Limits, end_date
from workers.support import metrics, tracing
from workers.support.errors import MissionsError
from workers.support.logs import log_ids

log = logging.getLogger(__name__)

FAILED_FIRE_DELAY = timedelta(seconds=60)  # a mission whose fire raised is fired again this much later


def fire_due(
    coordinator: Coordinator, limits: Limits, now: datetime, limit: int = 100, *, failed: list[str] | None = None
) -> int:
    """Fire every due mission, each in its own transaction; returns how many runs were started.
    The ids of the missions whose fire raised (logged, counted and skipped) go to ``failed``."""
    failed = failed if failed is not None else []
    with coordinator.db.transaction() as conn:
        due = schedules.due(conn, now, limit)
    started = 0
    for mission_id in due:
        with log_ids(mission_id=mission_id):
            try:
                # A fire's run is a trace of its own (the tick's are not sampled), open across the
                # commit so that the messages sent after it are in it too.
                with (
                    tracing.root("missions.schedule_fire", tracing.ids(None, mission_id)),
                    coordinator.transaction() as uow,
                ):
                    outcome = _fire_one(uow, mission_id, limits, now, failed)
            except Exception as exc:
                log.exception("scheduled fire of mission %s failed; skipped", mission_id)
                metrics.count_isolated("schedules")
                failed.append(mission_id)
                if is_transient(exc):
                    break  # the database failed: the other missions wait for the next tick
                _postpone(coordinator, mission_id, now)
                continue
        if outcome is not None:
            started += 1
    return started


def _postpone(coordinator: Coordinator, mission_id: str, now: datetime) -> None:
    """Move the next fire of a mission whose fire raised ``FAILED_FIRE_DELAY`` later (if it is still
    due and no other tick holds it), so that the other due missions go first meanwhile."""
    try:
        with coordinator.db.transaction() as conn:
            if schedules.lock_due(conn, mission_id, now) is not None:
                schedules.advance(conn, mission_id, now + FAILED_FIRE_DELAY, None, now)
    except Exception:
        log.warning("could not postpone the next fire of mission %s", mission_id, exc_info=True)


def _fire_one(uow: UnitOfWork, mission_id: str, limits: Limits, now: datetime, failed: list[str]) -> AfterCommit | None:
    conn = uow.conn
    row = schedules.lock_due(conn, mission_id, now)
    if row is None:
        return None  # another tick holds it, or already advanced it
    document = row["document"]
    schedule = document.get("schedule")
    if not schedule:
        schedules.clear_next_run(conn, mission_id)
        return None
    plan = plan_fires(
        schedule,
        document.get("timezone"),
        row["next_run_at"],
        now,
        catch_up=document.get("catchUp") or "skip",
        end_date=end_date(document),
        run_active=row["status"] in RUNNING_MISSION_STATUSES,
    )
    outcome: AfterCommit | None = None
    run_id: str | None = None
    for fire in plan.fires:
        status, reason = ("started", None) if fire.action == "run" else ("skipped", fire.reason)
        recorded = schedules.record_fire(conn, mission_id, fire.at, status, reason, now)
        if not recorded or fire.action != "run":
            continue
        try:
            with uow.savepoint():  # a mission that no longer validates skips this fire
                run_id, outcome, *_ = runs.execute(
                    uow, row["project_id"], mission_id, limits, now, document.get("scheduleData")
                )
        except MissionsError as exc:
            log.warning("scheduled fire of mission %s skipped: %s", mission_id, exc.message)
            schedules.skip_fire(conn, mission_id, fire.at, f"error: {exc.message}"[:500])
            continue
        except Exception as exc:  # the run could not start: this fire is skipped, the schedule goes on
            if is_transient(exc):
                raise  # the database failed: nothing is recorded, the fire is tried again next tick
            log.exception("scheduled fire of mission %s at %s failed; skipped", mission_id, fire.at)
            metrics.count_isolated("schedules")
            failed.append(mission_id)
            schedules.skip_fire(conn, mission_id, fire.at, f"error: the run could not start ({type(exc).__name__})")
            continue
        schedules.set_fire_run(conn, mission_id, fire.at, run_id)
    ran_out = plan.next_run_at is None and run_id is None and row["status"] == MissionStatus.SCHEDULED
    # A schedule that ran out without a run to show makes the mission a plain draft again.
    schedules.advance(conn, mission_id, plan.next_run_at, MissionStatus.DRAFT.value if ran_out else None, now)
    return outcome
