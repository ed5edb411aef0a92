"""The vocabulary the shell shares with the core (``orchestrator.vocabulary``, re-exported by
``orchestrator.engine``): stored values, status groups, the attempt-status rules and timer keys,
each checked against what the engine itself decides."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator import vocabulary
from orchestrator.engine import (
    DEADLINE_KEY,
    LIVE_ATTEMPT_STATUSES,
    LIVE_RUN_STATUSES,
    RUNNING_MISSION_STATUSES,
    TERMINAL_ATTEMPT_STATUSES,
    TERMINAL_RUN_STATUSES,
    AssessmentScored,
    AttemptStatus,
    CancelTimer,
    DeadlineReached,
    Decision,
    Event,
    MissionStatus,
    PublishEvent,
    RetryDue,
    RunState,
    ScheduleTimer,
    StartTask,
    TaskClaimed,
    TaskFailed,
    TaskFinished,
    TaskStatus,
    TaskTimedOut,
    Timer,
    TimerKind,
    assessment_passes,
    attempt_key,
    attempt_status_after_assessment,
    attempt_status_after_result,
    decide,
    start_run,
    timer_event,
)
from orchestrator.spec import MissionSpec

T0 = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
TEAM = {"name": "crew", "agents": [{"name": "dev", "model": "scripted/dev"}]}
JUDGED = [{"criterion": "is correct"}]
MIGRATIONS = Path(__file__).resolve().parents[2] / "workers" / "store" / "migrations"


def mission(*tasks: Mapping[str, Any], **fields: Any) -> MissionSpec:
    docs = [{"title": t["id"], "description": "", "assignTo": "dev", **t} for t in tasks]
    return MissionSpec.from_document({"name": "m", "team": TEAM, **fields, "tasks": docs})


def step(state: RunState, event: Event, now: datetime = T0) -> Decision:
    decision = decide(state, event, now)
    assert decision.ignored is None, decision.ignored
    return decision


def finished(spec: MissionSpec) -> RunState:
    """The run of ``spec`` after its task t1 was claimed and its agent finished."""
    state = start_run("run_1", "msn_1", spec, T0).state
    state = step(state, TaskClaimed("t1", 1, "worker-1")).state
    return step(state, TaskFinished("t1", 1, "done")).state


def timers(decision: Decision) -> list[ScheduleTimer | CancelTimer]:
    return [e for e in decision.effects if isinstance(e, (ScheduleTimer, CancelTimer))]


# ------------------------------------------------------------------------------- stored values


def test_stored_values_do_not_change() -> None:
    # Rows in Postgres hold these strings: changing one needs a migration, not just an edit.
    assert [s.value for s in AttemptStatus] == [
        "queued",
        "running",
        "assessing",
        "completed",
        "failed",
        "cancelled",
        "lost",
    ]
    assert [k.value for k in TimerKind] == ["retry", "timeout", "deadline", "checkpoint", "approval", "delay"]
    assert DEADLINE_KEY == "run"
    assert [s.value for s in MissionStatus] == [
        "draft",
        "scheduled",
        "active",
        "paused",
        "completed",
        "failed",
        "cancelled",
    ]


def test_engine_re_exports_the_vocabulary() -> None:
    from orchestrator import engine

    assert engine.TaskStatus is vocabulary.TaskStatus and engine.Timer is vocabulary.Timer
    assert engine.RUNNING_MISSION_STATUSES is vocabulary.RUNNING_MISSION_STATUSES


def test_the_schema_s_partial_indexes_use_the_same_statuses() -> None:
    sql = (MIGRATIONS / "0001_initial.sql").read_text()
    runs_active = re.search(r"runs_active ON runs \(status\) WHERE status IN \(([^)]*)\)", sql)
    assert runs_active is not None
    assert {v.strip(" '") for v in runs_active.group(1).split(",")} == set(RUNNING_MISSION_STATUSES)
    for status in re.findall(r"ON attempts \(\w+\) WHERE status = '(\w+)'", sql):
        assert status in set(AttemptStatus)


# ------------------------------------------------------------------------------- status groups


def test_status_groups() -> None:
    assert {MissionStatus.ACTIVE, MissionStatus.PAUSED} == RUNNING_MISSION_STATUSES == LIVE_RUN_STATUSES
    assert {MissionStatus.COMPLETED, MissionStatus.FAILED, MissionStatus.CANCELLED} == TERMINAL_RUN_STATUSES
    assert {AttemptStatus.QUEUED, AttemptStatus.RUNNING} == LIVE_ATTEMPT_STATUSES
    assert {
        AttemptStatus.COMPLETED,
        AttemptStatus.FAILED,
        AttemptStatus.CANCELLED,
        AttemptStatus.LOST,
    } == TERMINAL_ATTEMPT_STATUSES
    # Every attempt is live, being assessed, or over: exactly one of them.
    assert LIVE_ATTEMPT_STATUSES | {AttemptStatus.ASSESSING} | TERMINAL_ATTEMPT_STATUSES == set(AttemptStatus)
    assert not LIVE_ATTEMPT_STATUSES & TERMINAL_ATTEMPT_STATUSES


def test_groups_hold_enum_members_and_match_raw_strings() -> None:
    # The shell compares strings read from Postgres against them; a StrEnum equals its value.
    assert "paused" in RUNNING_MISSION_STATUSES and "draft" not in RUNNING_MISSION_STATUSES
    assert "running" in LIVE_ATTEMPT_STATUSES and "assessing" not in LIVE_ATTEMPT_STATUSES
    assert all(isinstance(s, AttemptStatus) for s in LIVE_ATTEMPT_STATUSES | TERMINAL_ATTEMPT_STATUSES)


def test_a_run_in_a_running_mission_status_takes_events_and_a_terminal_one_does_not() -> None:
    state = start_run("run_1", "msn_1", mission({"id": "t1"}), T0).state
    for status in MissionStatus:
        decision = decide(replace(state, status=status), TaskClaimed("t1", 1, "w"), T0)
        assert (decision.ignored is None) == (status in RUNNING_MISSION_STATUSES), status


# ------------------------------------------------------------------------------- attempt status rules


@pytest.mark.parametrize(
    ("failed", "assessed", "expected"),
    [
        (True, True, AttemptStatus.FAILED),
        (True, False, AttemptStatus.FAILED),
        (False, True, AttemptStatus.ASSESSING),
        (False, False, AttemptStatus.COMPLETED),
    ],
)
def test_attempt_status_after_result(failed: bool, assessed: bool, expected: AttemptStatus) -> None:
    assert attempt_status_after_result(failed=failed, assessed=assessed) is expected


@pytest.mark.parametrize("expectations", [JUDGED, []])
def test_a_finished_task_takes_the_status_its_attempt_row_gets(expectations: list[Any]) -> None:
    state = finished(mission({"id": "t1", "expectations": expectations}))
    rule = attempt_status_after_result(failed=False, assessed=bool(expectations))
    assert state.tasks["t1"].status.value == rule.value


def test_a_failed_attempt_is_failed_while_its_task_may_go_back_to_pending() -> None:
    state = start_run("run_1", "msn_1", mission({"id": "t1", "maxRetries": 1, "expectations": JUDGED}), T0).state
    state = step(state, TaskClaimed("t1", 1, "worker-1")).state
    state = step(state, TaskFailed("t1", 1, "boom")).state
    assert attempt_status_after_result(failed=True, assessed=True) is AttemptStatus.FAILED
    assert state.tasks["t1"].status is TaskStatus.QUEUED and state.tasks["t1"].attempt == 2  # the retry


@pytest.mark.parametrize(
    ("score", "error", "threshold", "passes"),
    [
        (3.0, None, 3.0, True),  # at the threshold passes
        (5.0, None, 3.0, True),
        (2.99, None, 3.0, False),
        (None, None, 3.0, False),  # no score
        (5.0, "judge crashed", 3.0, False),  # a failed judge fails whatever its score
        (math.nan, None, 3.0, False),
        (math.inf, None, 3.0, True),
        (0.0, None, 0.0, True),
    ],
)
def test_assessment_passes(score: float | None, error: str | None, threshold: float, passes: bool) -> None:
    assert assessment_passes(score, error, threshold) is passes


def test_attempt_status_after_assessment() -> None:
    assert attempt_status_after_assessment(True) is AttemptStatus.COMPLETED
    assert attempt_status_after_assessment(False) is AttemptStatus.FAILED


@given(
    score=st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.integers(-2, 7).map(float),
    error=st.none() | st.text(max_size=5),
    threshold=st.floats(0, 5, allow_nan=False) | st.integers(0, 5).map(float),
)
def test_the_engine_completes_an_assessed_task_exactly_when_assessment_passes(
    score: float | None, error: str | None, threshold: float
) -> None:
    spec = mission({"id": "t1", "expectations": JUDGED, "maxRetries": 0}, qualityThreshold=threshold)
    state = finished(spec)
    decision = step(state, AssessmentScored("t1", 1, score, (), error))
    passes = assessment_passes(score, error, threshold)
    (verdict,) = [e.data for e in decision.effects if isinstance(e, PublishEvent) and e.type == "task:assessment"]
    assert verdict["passed"] is passes
    # Without retries the task ends as its attempt row does.
    assert decision.state.tasks["t1"].status.value == attempt_status_after_assessment(passes).value


# ------------------------------------------------------------------------------- timers


def test_timer_keys_are_the_stored_strings() -> None:
    assert (Timer.deadline().kind, Timer.deadline().key) == ("deadline", "run")
    assert (Timer.retry("t1", 2).kind, Timer.retry("t1", 2).key) == ("retry", "t1:2")
    assert (Timer.timeout("t1", 1).kind, Timer.timeout("t1", 1).key) == ("timeout", "t1:1")
    assert Timer.retry("a:b", 3).key == attempt_key("a:b", 3) == "a:b:3"
    assert (Timer.approval("t1", 2).kind, Timer.approval("t1", 2).key) == ("approval", "t1:2")
    assert (Timer.checkpoint(0).kind, Timer.checkpoint(0).key) == ("checkpoint", "0")
    assert (Timer.delay(12).kind, Timer.delay(12).key) == ("delay", "12")


@pytest.mark.parametrize(
    ("kind", "task_id", "attempt"),
    [
        (TimerKind.DEADLINE, "t1", None),
        (TimerKind.DEADLINE, None, 1),
        (TimerKind.RETRY, None, 1),
        (TimerKind.RETRY, "t1", None),
        (TimerKind.TIMEOUT, "t1", -1),
        (TimerKind.APPROVAL, None, 1),
        (TimerKind.CHECKPOINT, None, None),
        (TimerKind.CHECKPOINT, "t1", 1),
        (TimerKind.DELAY, None, 1),
    ],
)
def test_a_timer_is_either_the_deadline_or_one_attempt_s(
    kind: TimerKind, task_id: str | None, attempt: int | None
) -> None:
    with pytest.raises(ValueError, match="timer"):
        Timer(kind, task_id, attempt)


@pytest.mark.parametrize("kind", [TimerKind.DEADLINE, TimerKind.RETRY, TimerKind.APPROVAL])
def test_only_checkpoint_and_delay_timers_have_an_index(kind: TimerKind) -> None:
    with pytest.raises(ValueError, match="timer"):
        Timer(kind, "t1" if kind is not TimerKind.DEADLINE else None, 1 if kind is not TimerKind.DEADLINE else None, 0)
    with pytest.raises(ValueError, match="timer"):
        Timer(TimerKind.DELAY, index=-1)


@pytest.mark.parametrize(
    ("kind", "key", "expected"),
    [
        ("deadline", "run", Timer.deadline()),
        ("retry", "t1:2", Timer.retry("t1", 2)),
        ("timeout", "t1:1", Timer.timeout("t1", 1)),
        ("retry", "a:b:3", Timer.retry("a:b", 3)),  # a task id with ':' splits at the last one
        ("retry", ":3", Timer.retry("", 3)),  # the core allows an empty task id
        ("timeout", "t1:0", Timer.timeout("t1", 0)),
        ("approval", "t1:3", Timer.approval("t1", 3)),
        ("checkpoint", "2", Timer.checkpoint(2)),
        ("delay", "0", Timer.delay(0)),
    ],
)
def test_parse(kind: str, key: str, expected: Timer) -> None:
    assert Timer.parse(kind, key) == expected


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        ("bogus", "t1:1"),
        ("Retry", "t1:1"),
        ("deadline", "t1:1"),
        ("deadline", ""),
        ("retry", "t1"),
        ("retry", "t1:"),
        ("retry", "t1:x"),
        ("retry", "t1:-1"),
        ("retry", "t1:+1"),
        ("retry", "t1: 1"),
        ("timeout", "t1:01"),
        ("timeout", "t1:²"),  # str.isdigit() says yes, int() says no
        ("timeout", "t1:٣"),  # str.isdigit() says yes, int() reads 3: not what attempt_key writes
        ("retry", ""),
        ("checkpoint", "t1:1"),
        ("checkpoint", "01"),
        ("delay", "-1"),
        ("delay", ""),
        ("approval", "3"),
    ],
)
def test_parse_rejects_what_no_timer_is_stored_as(kind: str, key: str) -> None:
    assert Timer.parse(kind, key) is None
    assert timer_event(kind, key) is None


task_ids = st.text(alphabet=st.sampled_from("ab:_-0123²٣ é"), max_size=10) | st.text(max_size=10)
per_attempt = st.builds(Timer, st.sampled_from([TimerKind.RETRY, TimerKind.TIMEOUT]), task_ids, st.integers(0, 10**12))
approvals = st.builds(Timer.approval, task_ids, st.integers(0, 10**12))
indexed = st.builds(Timer.checkpoint, st.integers(0, 10**6)) | st.builds(Timer.delay, st.integers(0, 10**6))
any_timer = per_attempt | approvals | indexed | st.just(Timer.deadline())


@given(any_timer)
def test_every_timer_parses_back_from_its_stored_kind_and_key(timer: Timer) -> None:
    assert Timer.parse(timer.kind.value, timer.key) == timer


@given(
    kind=st.sampled_from(["retry", "timeout", "deadline", "approval", "checkpoint", "delay", "run", "Retry", ""]),
    key=st.text(alphabet=st.sampled_from("ab:0123²٣-+ "), max_size=8) | st.sampled_from(["run", "t1:1"]),
)
def test_parse_accepts_only_what_a_timer_is_stored_as(kind: str, key: str) -> None:
    timer = Timer.parse(kind, key)
    if timer is not None:
        assert (timer.kind, timer.key) == (kind, key)


def test_timer_event() -> None:
    assert timer_event("deadline", "run") == DeadlineReached()
    assert timer_event("retry", "t1:2") == RetryDue("t1", 2)
    assert timer_event("timeout", "a:b:1") == TaskTimedOut("a:b", 1)


def _shell_timer_event(kind: str, key: str) -> Event | None:
    """The shell's own rule (``workers/coordination/tick.py`` before it used ``timer_event``)."""
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


@given((per_attempt | st.just(Timer.deadline())).filter(lambda t: t.task_id != ""))
def test_timer_event_fires_what_the_shell_s_rule_fired_for_every_stored_timer(timer: Timer) -> None:
    assert timer_event(timer.kind.value, timer.key) == _shell_timer_event(timer.kind.value, timer.key)


@pytest.mark.parametrize(
    ("kind", "key", "core", "shell"),
    [
        # Rows no engine ever wrote, where the two rules part:
        ("deadline", "other", None, DeadlineReached()),
        ("timeout", "t1:01", None, TaskTimedOut("t1", 1)),
        ("timeout", "t1:٣", None, TaskTimedOut("t1", 3)),
        # A task with an empty id (the core allows it): the shell's rule never fired its retry.
        ("retry", ":2", RetryDue("", 2), None),
    ],
)
def test_where_timer_event_differs_from_the_shell_s_old_rule(
    kind: str, key: str, core: Event | None, shell: Event | None
) -> None:
    assert timer_event(kind, key) == core
    assert _shell_timer_event(kind, key) == shell


def test_the_shell_s_old_rule_crashed_on_a_digit_int_rejects() -> None:
    assert timer_event("timeout", "t1:²") is None
    with pytest.raises(ValueError, match="invalid literal"):
        _shell_timer_event("timeout", "t1:²")


def _fires(effect: ScheduleTimer | CancelTimer) -> Event:
    event = timer_event(effect.kind, effect.key)
    assert event is not None, effect
    return event


def test_timer_effects_carry_plain_strings() -> None:
    # The shell hands them to SQL as they are; plain str needs no adapter.
    decision = start_run("run_1", "msn_1", mission({"id": "t1"}, deadlineAfter=60), T0)
    (effect,) = timers(decision)
    assert effect == ScheduleTimer.of(Timer.deadline(), T0 + timedelta(seconds=60))
    assert type(effect.kind) is str and type(effect.key) is str
    assert CancelTimer.of(Timer.retry("t1", 2)) == CancelTimer("retry", "t1:2")


def test_the_deadline_timer_fires_deadline_reached_and_is_cancelled_by_the_same_name() -> None:
    decision = start_run("run_1", "msn_1", mission({"id": "t1"}, deadlineAfter=60), T0)
    (armed,) = timers(decision)
    assert _fires(armed) == DeadlineReached()
    stopped = step(decision.state, _fires(armed), T0 + timedelta(seconds=60))
    assert stopped.state.status is MissionStatus.FAILED
    state = step(decision.state, TaskClaimed("t1", 1, "w")).state
    done = step(state, TaskFinished("t1", 1, "ok"))
    assert [(t.kind, t.key) for t in timers(done)] == [(armed.kind, armed.key)]
    assert isinstance(timers(done)[0], CancelTimer)


def test_the_timeout_timer_fires_the_timeout_of_its_attempt() -> None:
    state = start_run("run_1", "msn_1", mission({"id": "t1", "timeout": 30, "maxRetries": 0}), T0).state
    claimed = step(state, TaskClaimed("t1", 1, "w"))
    (armed,) = timers(claimed)
    assert isinstance(armed, ScheduleTimer) and armed.due_at == T0 + timedelta(seconds=30)
    assert _fires(armed) == TaskTimedOut("t1", 1)
    timed_out = step(claimed.state, _fires(armed), armed.due_at)
    assert timed_out.state.tasks["t1"].status is TaskStatus.FAILED


def test_the_retry_timer_fires_the_retry_it_was_armed_for() -> None:
    spec = mission({"id": "x:y", "maxRetries": 1, "retryPolicy": {"backoff": 60}})
    state = start_run("run_1", "msn_1", spec, T0).state
    state = step(state, TaskClaimed("x:y", 1, "w")).state
    failed = step(state, TaskFailed("x:y", 1, "boom"))
    (armed,) = timers(failed)
    assert isinstance(armed, ScheduleTimer) and armed.key == "x:y:2"
    retried = step(failed.state, _fires(armed), armed.due_at)
    assert StartTask("x:y", 2, "dev", "scripted/dev") in retried.effects
