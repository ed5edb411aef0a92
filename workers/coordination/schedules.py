"""Scheduled missions: when they fire next, and firing them from the tick.

``next_run_at`` is an indexed column on ``missions``, computed by ``orchestrator.schedule`` when
a schedule is set or changed and advanced on every fire. The tick locks each due mission row
(``FOR UPDATE SKIP LOCKED``, re-checking it is still due) and records every fire in
``schedule_fires`` under a unique (mission, fire time) before starting its run, so several beats
or a repeated tick can never start two runs for one fire.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import psycopg

from orchestrator.schedule import is_cron, next_fire, plan_fires
from orchestrator.spec import parse_timestamp
from workers.coordination import runs
from workers.coordination.step import AfterCommit
from workers.support.errors import Invalid, MissionsError
from workers.store.missions import RUNNING_STATUSES, Limits

log = logging.getLogger(__name__)

_DUE = """
SELECT id FROM missions WHERE next_run_at <= %(now)s ORDER BY next_run_at LIMIT %(limit)s
"""

_LOCK_DUE = """
SELECT id, project_id, status, next_run_at, document FROM missions
 WHERE id = %(id)s AND next_run_at <= %(now)s
   FOR UPDATE SKIP LOCKED
"""

_RECORD_FIRE = """
INSERT INTO schedule_fires (mission_id, fire_at, status, reason, recorded_at)
VALUES (%(mission_id)s, %(fire_at)s, %(status)s, %(reason)s, %(now)s)
ON CONFLICT (mission_id, fire_at) DO NOTHING
RETURNING 1
"""

_LIST_FIRES = """
SELECT fire_at, status, reason, run_id, recorded_at FROM schedule_fires
 WHERE mission_id = %(mission_id)s ORDER BY fire_at DESC LIMIT %(limit)s OFFSET %(offset)s
"""


def _end_date(document: Mapping[str, Any]) -> datetime | None:
    value = document.get("endDate")
    return parse_timestamp(value) if value else None


def next_run_at(document: Mapping[str, Any], now: datetime) -> datetime | None:
    """The next fire of the document's schedule after ``now``; ``Invalid`` when it has none left."""
    schedule = document.get("schedule")
    if not schedule:
        return None
    fire = next_fire(schedule, document.get("timezone"), now, _end_date(document))
    if fire is None:
        if is_cron(schedule):
            raise Invalid("the schedule has no fire left before endDate",
                          {"fields": {"endDate": ["no fire of the schedule falls before this date"]}})
        raise Invalid(f'schedule "{schedule}" is in the past; a one-shot schedule needs a future time',
                      {"fields": {"schedule": ["in the past"]}})
    return fire


def fire_due(conn_factory: Any, dispatch: Any, limits: Limits, now: datetime, limit: int = 100) -> int:
    """Fire every due mission; returns how many runs were started. ``conn_factory()`` gives a
    transaction context, ``dispatch(outcome)`` sends a committed run's first messages."""
    with conn_factory() as conn:
        due = [row["id"] for row in conn.execute(_DUE, {"now": now, "limit": limit})]
    started = 0
    for mission_id in due:
        outcome: AfterCommit | None = None
        with conn_factory() as conn:
            outcome = _fire_one(conn, mission_id, limits, now)
        if outcome is not None:
            dispatch(outcome)
            started += 1
    return started


def _fire_one(conn: psycopg.Connection[Any], mission_id: str, limits: Limits, now: datetime) -> AfterCommit | None:
    row = conn.execute(_LOCK_DUE, {"id": mission_id, "now": now}).fetchone()
    if row is None:
        return None  # another tick holds it, or already advanced it
    document = row["document"]
    schedule = document.get("schedule")
    if not schedule:
        conn.execute("UPDATE missions SET next_run_at = NULL WHERE id = %s", (mission_id,))
        return None
    plan = plan_fires(schedule, document.get("timezone"), row["next_run_at"], now,
                      catch_up=document.get("catchUp") or "skip", end_date=_end_date(document),
                      run_active=row["status"] in RUNNING_STATUSES)
    outcome: AfterCommit | None = None
    run_id: str | None = None
    for fire in plan.fires:
        status, reason = ("started", None) if fire.action == "run" else ("skipped", fire.reason)
        recorded = conn.execute(_RECORD_FIRE, {"mission_id": mission_id, "fire_at": fire.at, "status": status,
                                               "reason": reason, "now": now}).fetchone()
        if recorded is None or fire.action != "run":
            continue
        try:
            with conn.transaction():  # a savepoint: a mission that no longer validates skips this fire
                run_id, outcome, *_ = runs.execute(conn, row["project_id"], mission_id, limits, now)
        except MissionsError as exc:
            log.warning("scheduled fire of mission %s skipped: %s", mission_id, exc.message)
            conn.execute("UPDATE schedule_fires SET status = 'skipped', reason = %s WHERE mission_id = %s"
                         " AND fire_at = %s", (f"error: {exc.message}"[:500], mission_id, fire.at))
            continue
        conn.execute("UPDATE schedule_fires SET run_id = %s WHERE mission_id = %s AND fire_at = %s",
                     (run_id, mission_id, fire.at))
    if plan.next_run_at is None and run_id is None and row["status"] == "scheduled":
        status = "draft"  # the schedule ran out without a run to show: back to a plain mission
    else:
        status = None
    conn.execute(
        "UPDATE missions SET next_run_at = %s, status = coalesce(%s, status), updated_at = %s WHERE id = %s",
        (plan.next_run_at, status, now, mission_id),
    )
    return outcome


def list_fires(conn: psycopg.Connection[Any], mission_id: str, limit: int, offset: int) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(_LIST_FIRES, {"mission_id": mission_id, "limit": limit, "offset": offset})]
