"""Next-fire computation and misfire planning, with no clock reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.schedule import next_fire, plan_fires


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def fires(schedule: str, tz: str, start: datetime, count: int) -> list[datetime]:
    out, at = [], start
    for _ in range(count):
        at = next_fire(schedule, tz, at)
        assert at is not None
        out.append(at)
    return out


def test_weekly_report_fires_at_nine_rome_time_in_winter_and_summer() -> None:
    winter = next_fire("0 9 * * MON", "Europe/Rome", utc(2026, 11, 28, 12))
    assert winter == utc(2026, 11, 30, 8)  # 09:00 CET
    summer = next_fire("0 9 * * MON", "Europe/Rome", utc(2026, 6, 2, 12))
    assert summer == utc(2026, 6, 8, 7)  # 09:00 CEST


def test_a_time_inside_the_berlin_spring_forward_gap_does_not_fire_that_day() -> None:
    got = fires("30 2 * * *", "Europe/Berlin", utc(2026, 3, 27, 12), 3)
    assert got == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]


def test_a_time_repeated_by_the_berlin_fall_back_fires_once() -> None:
    got = fires("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 12), 2)
    assert got == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


def test_new_york_skips_the_missing_hour_and_fires_the_repeated_one_once() -> None:
    spring = fires("30 2 * * *", "America/New_York", utc(2026, 3, 7, 12), 2)
    assert spring == [utc(2026, 3, 9, 6, 30), utc(2026, 3, 10, 6, 30)]  # none on Mar 8
    autumn = fires("30 1 * * *", "America/New_York", utc(2026, 10, 31, 12), 2)
    assert autumn == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]  # first 01:30 (EDT) only


def test_hourly_schedule_across_fall_back_never_fires_the_same_instant_twice() -> None:
    got = fires("0 * * * *", "America/New_York", utc(2026, 11, 1, 3, 30), 4)
    assert got == [utc(2026, 11, 1, 4), utc(2026, 11, 1, 5), utc(2026, 11, 1, 7), utc(2026, 11, 1, 8)]


def test_utc_is_the_default_timezone() -> None:
    assert next_fire("15 10 * * *", None, utc(2026, 1, 1)) == utc(2026, 1, 1, 10, 15)


def test_nothing_fires_after_the_end_date() -> None:
    end = utc(2026, 1, 3)
    assert next_fire("0 12 * * *", "UTC", utc(2026, 1, 2), end) == utc(2026, 1, 2, 12)
    assert next_fire("0 12 * * *", "UTC", utc(2026, 1, 2, 12), end) is None


def test_a_one_shot_schedule_fires_once() -> None:
    assert next_fire("2026-05-01T10:00:00Z", None, utc(2026, 4, 1)) == utc(2026, 5, 1, 10)
    assert next_fire("2026-05-01T10:00:00Z", None, utc(2026, 5, 1, 10)) is None


def test_an_on_time_fire_runs_and_the_next_one_is_planned() -> None:
    plan = plan_fires("*/5 * * * *", "UTC", utc(2026, 1, 1, 10), utc(2026, 1, 1, 10, 0, 2))
    assert [(f.at, f.action) for f in plan.fires] == [(utc(2026, 1, 1, 10), "run")]
    assert plan.next_run_at == utc(2026, 1, 1, 10, 5)


def test_fires_missed_during_downtime_are_skipped_by_default() -> None:
    plan = plan_fires("0 * * * *", "UTC", utc(2026, 1, 1, 10), utc(2026, 1, 1, 13, 30))
    assert plan.to_run is None
    assert [(f.at.hour, f.action, f.reason) for f in plan.fires] == [
        (10, "skipped", "missed"),
        (11, "skipped", "missed"),
        (12, "skipped", "missed"),
        (13, "skipped", "missed"),
    ]
    assert plan.next_run_at == utc(2026, 1, 1, 14)


def test_catch_up_latest_runs_once_for_the_missed_fires() -> None:
    plan = plan_fires("0 * * * *", "UTC", utc(2026, 1, 1, 10), utc(2026, 1, 1, 13, 30), catch_up="latest")
    assert plan.to_run is not None and plan.to_run.at == utc(2026, 1, 1, 13)
    assert [f.reason for f in plan.fires if f.action == "skipped"] == ["caught_up"] * 3
    assert plan.next_run_at == utc(2026, 1, 1, 14)


def test_a_fire_while_a_run_is_active_is_skipped_as_an_overlap() -> None:
    plan = plan_fires("*/5 * * * *", "UTC", utc(2026, 1, 1, 10), utc(2026, 1, 1, 10, 0, 1), run_active=True)
    assert [(f.action, f.reason) for f in plan.fires] == [("skipped", "overlap")]
    assert plan.next_run_at == utc(2026, 1, 1, 10, 5)


def test_a_one_shot_fire_exhausts_the_schedule() -> None:
    plan = plan_fires("2026-05-01T10:00:00Z", None, utc(2026, 5, 1, 10), utc(2026, 5, 1, 10, 0, 1))
    assert plan.to_run is not None and plan.next_run_at is None


def test_a_one_shot_fire_found_late_is_skipped_unless_catching_up() -> None:
    late = utc(2026, 5, 1, 12)
    assert plan_fires("2026-05-01T10:00:00Z", None, utc(2026, 5, 1, 10), late).to_run is None
    assert plan_fires("2026-05-01T10:00:00Z", None, utc(2026, 5, 1, 10), late, catch_up="latest").to_run is not None


@settings(max_examples=60, deadline=None)
@given(
    tz=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Europe/Rome", "Australia/Sydney"]),
    expr=st.sampled_from(["*/15 * * * *", "0 * * * *", "30 1 * * *", "30 2 * * *", "0 9 * * MON", "45 23 * * *"]),
    start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)),
)
def test_fires_strictly_increase_and_each_is_a_wall_clock_match(tz: str, expr: str, start: datetime) -> None:
    from zoneinfo import ZoneInfo

    from croniter import croniter

    got = fires(expr, tz, start, 6)
    assert all(b > a for a, b in zip([start, *got], got, strict=False))
    for at in got:
        local = at.astimezone(ZoneInfo(tz)).replace(tzinfo=None)
        assert croniter.match(expr, local)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError):
        next_fire("* * * * *", None, datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        plan_fires("* * * * *", None, datetime(2026, 1, 1), datetime(2026, 1, 1) + timedelta(minutes=1))
