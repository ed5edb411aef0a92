"""When a scheduled mission fires: pure computation over cron expressions and time zones.

A schedule is a 5-field cron expression read in the mission's ``timezone`` (IANA name, default
UTC), or an ISO 8601 timestamp that fires once. Guarantees:

- cron times are wall-clock times: a time that does not exist on a spring-forward day (the clock
  jumps from 02:00 to 03:00) does not fire, and a time that occurs twice on a fall-back day fires
  once, at its first occurrence; no other fire is ever added or lost;
- nothing fires after ``end_date``;
- ``plan_fires`` decides, for a due mission, which fire runs and which are recorded as skipped:
  a fire is on time while it is at most ``grace`` old; with ``catch_up="skip"`` late fires are
  skipped, with ``catch_up="latest"`` the latest of them runs once; a fire while a run is still
  active is skipped as an overlap.

No clock is read here: ``now`` and ``after`` are arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter  # type: ignore[import-untyped,unused-ignore]

from orchestrator.spec import parse_timestamp

DEFAULT_GRACE = timedelta(seconds=60)
# Enough fires to walk through any downtime without looping forever on a dense schedule.
MAX_FIRES_PER_PLAN = 10_000


def is_cron(schedule: str) -> bool:
    return len(schedule.split()) == 5


def _zone(name: str | None) -> ZoneInfo:
    return ZoneInfo(name or "UTC")


def _exists(local: datetime, zone: ZoneInfo) -> bool:
    """Whether a naive wall-clock time exists in ``zone`` (it does not inside a spring-forward gap)."""
    aware = local.replace(tzinfo=zone, fold=0)
    back = aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    return back == local


def next_fire(schedule: str, tz: str | None, after: datetime, end_date: datetime | None = None) -> datetime | None:
    """The first fire strictly after ``after`` (UTC-aware result), or None when there is none."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    if not is_cron(schedule):
        at = parse_timestamp(schedule)
        fire = at if at > after else None
    else:
        zone = _zone(tz)
        # Start a little before ``after`` in wall-clock terms: around a fall-back the same wall time
        # maps to two instants, and candidates at or before ``after`` are dropped below anyway.
        start = after.astimezone(zone).replace(tzinfo=None) - timedelta(hours=3)
        times = croniter(schedule, start)
        fire = None
        for _ in range(MAX_FIRES_PER_PLAN):
            local = times.get_next(datetime)
            if not _exists(local, zone):
                continue
            candidate = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
            if candidate > after:
                fire = candidate
                break
    if fire is not None and end_date is not None and fire > end_date:
        return None
    return fire


@dataclass(frozen=True)
class Fire:
    at: datetime
    action: str  # "run" or "skipped"
    reason: str | None = None  # why skipped: "missed" (late, catch_up skip), "caught_up", "overlap"


@dataclass(frozen=True)
class FirePlan:
    fires: tuple[Fire, ...]
    next_run_at: datetime | None  # None: the schedule is exhausted

    @property
    def to_run(self) -> Fire | None:
        return next((f for f in self.fires if f.action == "run"), None)


def plan_fires(
    schedule: str,
    tz: str | None,
    due: datetime,
    now: datetime,
    *,
    catch_up: str = "skip",
    end_date: datetime | None = None,
    run_active: bool = False,
    grace: timedelta = DEFAULT_GRACE,
) -> FirePlan:
    """What to do with a mission whose ``next_run_at`` (``due``) is at or before ``now``."""
    if now.tzinfo is None or due.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    missed: list[datetime] = []
    fire: datetime | None = due
    while fire is not None and fire <= now and len(missed) < MAX_FIRES_PER_PLAN:
        missed.append(fire)
        fire = next_fire(schedule, tz, fire, end_date)
    upcoming = fire if fire is not None and fire > now else None
    if fire is not None and fire <= now:  # more fires than one plan walks; continue from now
        upcoming = next_fire(schedule, tz, now, end_date)

    chosen: datetime | None = None
    latest = missed[-1] if missed else None
    if (latest is not None and now - latest <= grace) or (latest is not None and catch_up == "latest"):
        chosen = latest
    fires: list[Fire] = []
    for at in missed:
        if at == chosen:
            continue
        fires.append(Fire(at, "skipped", "caught_up" if chosen is not None and catch_up == "latest" else "missed"))
    if chosen is not None:
        fires.append(Fire(chosen, "skipped", "overlap") if run_active else Fire(chosen, "run"))
    fires.sort(key=lambda f: f.at)
    return FirePlan(tuple(fires), upcoming)
