"""``decide_all``: several observed facts applied as one decision, in order, each at its own time.

The worker uses it to announce a claim together with the attempt's result (one step instead of
two for a quick agent), and the reaper to apply a claim it finds only in the attempt row before
the loss of that attempt's worker."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.engine import (
    Decision,
    PublishEvent,
    ScheduleTimer,
    TaskClaimed,
    TaskFailed,
    TaskFinished,
    TaskStatus,
    WorkerLost,
    decide,
    decide_all,
)
from tests.unit.test_engine import T0, Run, mission

A_SECOND = timedelta(seconds=1)


def statuses(decision: Decision) -> list[str]:
    return [
        f"{e.data.get('taskId')}:{e.data['status']}"
        for e in decision.effects
        if isinstance(e, PublishEvent) and e.type == "task:status"
    ]


def test_a_claim_and_the_result_become_one_decision_with_both_events_in_order() -> None:
    run = Run(mission({"id": "a"}, {"id": "b", "dependsOn": ["a"]}))
    claimed, finished = T0 + A_SECOND, T0 + 2 * A_SECOND
    both = decide_all(run.state, [(TaskClaimed("a", 1, "w"), claimed), (TaskFinished("a", 1, "out"), finished)])
    one = decide(run.state, TaskClaimed("a", 1, "w"), claimed)
    two = decide(one.state, TaskFinished("a", 1, "out"), finished)
    assert both.ignored is None
    assert both.state == two.state
    assert both.effects == one.effects + two.effects
    assert both.changed_tasks == (one.changed_tasks or frozenset()) | (two.changed_tasks or frozenset())
    assert statuses(both) == ["a:running", "a:completed", "b:queued"]
    assert both.state.tasks["a"].started_at == claimed  # the claim keeps its own time
    assert both.state.tasks["a"].finished_at == finished


def test_a_claim_announced_before_is_skipped_and_the_result_still_applies() -> None:
    run = Run(mission({"id": "a"}))
    run.claim("a")
    decision = decide_all(run.state, [(TaskClaimed("a", 1, "w"), T0), (TaskFinished("a", 1, "out"), T0 + A_SECOND)])
    assert decision.ignored is None
    assert statuses(decision) == ["a:completed"]


def test_the_timeout_is_armed_from_the_claim_time_not_the_step_time() -> None:
    run = Run(mission({"id": "a", "timeout": 30}))
    decision = decide_all(
        run.state, [(TaskClaimed("a", 1, "w"), T0 + A_SECOND), (TaskFailed("a", 1, "boom"), T0 + 3 * A_SECOND)]
    )
    armed = [e for e in decision.effects if isinstance(e, ScheduleTimer) and e.kind == "timeout"]
    assert [e.due_at for e in armed] == [T0 + 31 * A_SECOND]


def test_only_ignored_events_give_an_ignored_decision_with_every_reason() -> None:
    run = Run(mission({"id": "a"}))
    decision = decide_all(run.state, [(TaskClaimed("a", 7, "w"), T0), (TaskFinished("a", 7, "x"), T0)])
    assert decision.ignored is not None and decision.ignored.count("attempt 7") == 2
    assert decision.effects == () and decision.state is run.state


def test_no_events_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        decide_all(Run(mission({"id": "a"})).state, [])


def test_a_side_effecting_attempt_claimed_but_not_announced_still_waits_for_approval_when_lost() -> None:
    """Why the reaper feeds the claim first: the run state alone would say the attempt never
    started, and a lost attempt that never started is simply run again."""
    run = Run(mission({"id": "deploy", "sideEffects": True}))
    alone = decide(run.state, WorkerLost("deploy", 1), T0 + A_SECOND)
    assert alone.state.tasks["deploy"].status is TaskStatus.PENDING or started_again(alone)
    with_claim = decide_all(run.state, [(TaskClaimed("deploy", 1, "w"), T0), (WorkerLost("deploy", 1), T0 + A_SECOND)])
    assert with_claim.state.tasks["deploy"].status is TaskStatus.AWAITING_APPROVAL
    assert with_claim.state.pause_reason is not None and with_claim.state.pause_reason.value == "approval"


def started_again(decision: Decision) -> bool:
    return decision.state.tasks["deploy"].status is TaskStatus.QUEUED and decision.state.tasks["deploy"].attempt == 2


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["claim", "finish", "fail", "lost"]),
        st.sampled_from(["a", "b"]),
        st.integers(min_value=1, max_value=2),
        st.integers(min_value=0, max_value=5),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(EVENTS)
def test_deciding_all_at_once_equals_deciding_one_after_the_other(raw: list[tuple[str, str, int, int]]) -> None:
    run = Run(mission({"id": "a"}, {"id": "b"}, {"id": "c", "dependsOn": ["a", "b"]}))
    make = {
        "claim": lambda t, n: TaskClaimed(t, n, "w"),
        "finish": lambda t, n: TaskFinished(t, n, "out"),
        "fail": lambda t, n: TaskFailed(t, n, "boom"),
        "lost": WorkerLost,
    }
    events = [(make[kind](task, attempt), T0 + offset * A_SECOND) for kind, task, attempt, offset in raw]
    together = decide_all(run.state, events)
    state, effects, changed, any_applied = run.state, [], set(), False
    for event, at in events:
        decision = decide(state, event, at)
        state = decision.state
        if decision.ignored is None:
            any_applied = True
            effects.extend(decision.effects)
            changed |= decision.changed_tasks or set()
    assert together.state == state
    assert list(together.effects) == effects
    assert (together.ignored is None) == any_applied
    if any_applied:
        assert together.changed_tasks == frozenset(changed)
