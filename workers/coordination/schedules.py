"""Scheduled missions: when they fire next, and firing them from the tick.

``next_run_at`` is an indexed column on ``missions``, computed by ``orchestrator.schedule`` when
a schedule is set or changed and advanced on every fire. The tick locks each due mission row
(``FOR UPDATE SKIP LOCKED``, re-checking it is still due) and records every fire in
``schedule_fires`` under a unique (mission, fire time) before starting its run, so several beats
or a repeated tick can never start two runs for one fire.
"""

from __future__ import annotations

import logging
from datetime import datetime

from orchestrator.engine import RUNNING_MISSION_STATUSES, MissionStatus
from orchestrator.schedule import plan_fires
from workers.coordination import runs
from workers.coordination.advance import Coordinator, UnitOfWork
from workers.coordination.outcome import AfterCommit
from workers.store import schedules
from workers.store.missions import Limits, end_date
from workers.support.errors import MissionsError

log = logging.getLogger(__name__)


def fire_due(coordinator: Coordinator, limits: Limits, now: datetime, limit: int = 100) -> int:
    """Fire every due mission, each in its own transaction; returns how many runs were started."""
    with coordinator.db.transaction() as conn:
        due = schedules.due(conn, now, limit)
    started = 0
    for mission_id in due:
        with coordinator.transaction() as uow:
            outcome = _fire_one(uow, mission_id, limits, now)
        if outcome is not None:
            started += 1
    return started


def _fire_one(uow: UnitOfWork, mission_id: str, limits: Limits, now: datetime) -> AfterCommit | None:
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
                run_id, outcome, *_ = runs.execute(uow, row["project_id"], mission_id, limits, now)
        except MissionsError as exc:
            log.warning("scheduled fire of mission %s skipped: %s", mission_id, exc.message)
            schedules.skip_fire(conn, mission_id, fire.at, f"error: {exc.message}"[:500])
            continue
        schedules.set_fire_run(conn, mission_id, fire.at, run_id)
    ran_out = plan.next_run_at is None and run_id is None and row["status"] == MissionStatus.SCHEDULED
    # A schedule that ran out without a run to show makes the mission a plain draft again.
    schedules.advance(conn, mission_id, plan.next_run_at, MissionStatus.DRAFT.value if ran_out else None, now)
    return outcome
