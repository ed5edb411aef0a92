"""The arithmetic of what a person reads about a run (orchestrator.report)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.report import (
    RUN_TASK_STATUSES,
    AttemptTimes,
    AttemptUsage,
    TaskLine,
    average_score,
    escalation,
    run_summary,
    seconds_between,
    waiting_for,
)
from orchestrator.spec import AgentSpec, TaskSpec

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def task(**extra: object) -> TaskSpec:
    return TaskSpec.from_document({"title": "A", "description": "d", "assignTo": "writer", **extra})


AGENTS = {
    "writer": AgentSpec(name="writer", model="openai/small"),
    "senior": AgentSpec(name="senior", model="openai/large"),
}


def test_a_duration_needs_both_ends_and_is_never_negative() -> None:
    assert seconds_between(at(0), at(1.5)) == 1.5
    assert seconds_between(None, at(1)) is None
    assert seconds_between(at(1), None) is None
    assert seconds_between(at(2), at(1)) == 0.0  # two clocks a little apart


def test_an_assessed_attempts_phases_add_up_to_its_duration() -> None:
    phases = AttemptTimes(at(0), at(2), at(5), at(6)).phases()
    assert phases == {"queueSeconds": 2.0, "agentSeconds": 3.0, "assessmentSeconds": 1.0, "durationSeconds": 4.0}


def test_an_attempt_without_assessment_has_no_assessment_phase() -> None:
    phases = AttemptTimes(at(0), at(1), None, at(4)).phases()
    assert phases["agentSeconds"] == 3.0 and phases["assessmentSeconds"] is None and phases["durationSeconds"] == 3.0


def test_an_attempt_being_assessed_has_an_agent_phase_but_no_duration_yet() -> None:
    phases = AttemptTimes(at(0), at(1), at(3), None).phases()
    assert phases["agentSeconds"] == 2.0
    assert phases["assessmentSeconds"] is None and phases["durationSeconds"] is None


def test_a_queued_attempt_has_no_phase_but_its_wait() -> None:
    assert AttemptTimes(at(0), None, None, None).phases() == {
        "queueSeconds": None,
        "agentSeconds": None,
        "assessmentSeconds": None,
        "durationSeconds": None,
    }


def test_an_attempt_by_the_assigned_agent_and_its_model_is_not_escalated() -> None:
    spec = task(retryPolicy={"fallbackAgent": "senior", "escalateModel": "openai/huge"})
    assert escalation(spec, AGENTS, "writer", "openai/small") == {
        "escalated": False,
        "fallbackAgent": False,
        "escalatedModel": False,
    }


def test_an_attempt_by_the_fallback_agent_is_escalated() -> None:
    spec = task(retryPolicy={"fallbackAgent": "senior"})
    assert escalation(spec, AGENTS, "senior", "openai/large") == {
        "escalated": True,
        "fallbackAgent": True,
        "escalatedModel": False,
    }


def test_an_attempt_on_the_escalated_model_is_escalated() -> None:
    spec = task(retryPolicy={"escalateModel": "openai/huge"})
    result = escalation(spec, AGENTS, "writer", "openai/huge")
    assert result == {"escalated": True, "fallbackAgent": False, "escalatedModel": True}


def test_an_escalate_model_equal_to_the_agents_own_model_is_no_escalation() -> None:
    spec = task(retryPolicy={"escalateModel": "openai/small"})
    assert escalation(spec, AGENTS, "writer", "openai/small")["escalated"] is False


def test_the_average_score_leaves_out_unscored_tasks_and_is_none_without_any() -> None:
    assert average_score([4.0, None, 5.0]) == 4.5
    assert average_score([None, None]) is None
    assert average_score([]) is None


def line(task_id: str, status: str, **extra: object) -> TaskLine:
    return TaskLine(task_id=task_id, title=task_id, status=status, **extra)  # type: ignore[arg-type]


def test_a_run_summary_counts_every_status_and_adds_up_its_tasks() -> None:
    lines = [
        line("a", "completed", attempts=2, score=4.0, tokens_in=10, tokens_out=5, cost_usd=0.25, work_seconds=3),
        line("b", "failed", attempts=3, score=2.0, tokens_in=1, tokens_out=1, cost_usd=0.5, work_seconds=1.5),
        line("c", "skipped"),
    ]
    summary = run_summary(lines, at(0), at(10), now=at(99))
    assert summary["durationSeconds"] == 10.0  # finished: the clock stopped at its end
    assert summary["averageScore"] == 3.0
    totals = summary["totals"]
    assert totals["tasksByStatus"] == {**dict.fromkeys(RUN_TASK_STATUSES, 0), "completed": 1, "failed": 1, "skipped": 1}
    assert (totals["tasks"], totals["scoredTasks"], totals["attempts"]) == (3, 2, 5)
    assert (totals["tokensIn"], totals["tokensOut"], totals["costUsd"], totals["workSeconds"]) == (11, 6, 0.75, 4.5)


def test_the_duration_of_a_run_not_finished_runs_to_now() -> None:
    assert run_summary([], at(0), None, now=at(7))["durationSeconds"] == 7.0
    assert run_summary([], None, None, now=at(7))["durationSeconds"] is None


def test_a_task_lines_duration_spans_its_first_queue_to_its_last_end() -> None:
    out = line("a", "completed", attempts=2, first_queued_at=at(1), last_ended_at=at(9), work_seconds=4).to_json()
    assert out["durationSeconds"] == 8.0 and out["workSeconds"] == 4.0
    assert line("b", "pending").to_json()["durationSeconds"] is None


def test_one_more_attempt_adds_its_usage_and_widens_the_lines_span() -> None:
    before = line(
        "a",
        "running",
        attempts=1,
        tokens_in=10,
        tokens_out=5,
        cost_usd=0.25,
        first_queued_at=at(2),
        last_ended_at=at(6),
        work_seconds=3.0,
    )
    after = before.plus(AttemptUsage(1, 2, 0.5, queued_at=at(7), claimed_at=at(8), ended_at=at(11.5)))
    assert (after.attempts, after.tokens_in, after.tokens_out, after.cost_usd) == (2, 11, 7, 0.75)
    assert (after.first_queued_at, after.last_ended_at, after.work_seconds) == (at(2), at(11.5), 6.5)
    assert after.status == "running" and after.title == before.title  # (what the run's state decides stays)


def test_an_attempt_not_ended_or_never_claimed_adds_no_work_and_a_clock_step_back_adds_none() -> None:
    empty = line("a", "pending")
    running = empty.plus(AttemptUsage(0, 0, 0.0, queued_at=at(1), claimed_at=at(2), ended_at=None))
    assert (running.attempts, running.first_queued_at, running.last_ended_at, running.work_seconds) == (
        1,
        at(1),
        None,
        0,
    )
    backwards = empty.plus(AttemptUsage(0, 0, 0.0, queued_at=at(1), claimed_at=at(5), ended_at=at(4)))
    assert backwards.work_seconds == 0 and backwards.last_ended_at == at(4)
    unclaimed = empty.plus(AttemptUsage(0, 0, 0.0, queued_at=at(1), claimed_at=None, ended_at=at(3)))
    assert unclaimed.work_seconds == 0


scores = st.one_of(st.none(), st.floats(min_value=1, max_value=5))


@given(st.lists(st.tuples(st.sampled_from(RUN_TASK_STATUSES), scores, st.integers(0, 10**6)), max_size=30))
def test_a_summary_is_the_sum_of_its_lines_and_its_average_lies_between_their_scores(
    items: list[tuple[str, float | None, int]],
) -> None:
    lines = [line(str(i), s, score=sc, tokens_in=n, attempts=1) for i, (s, sc, n) in enumerate(items)]
    summary = run_summary(lines, at(0), None, now=at(1))
    totals = summary["totals"]
    assert sum(totals["tasksByStatus"].values()) == totals["tasks"] == len(lines)
    assert totals["tokensIn"] == sum(n for _, _, n in items)
    known = [sc for _, sc, _ in items if sc is not None]
    if known:
        assert min(known) - 1e-4 <= summary["averageScore"] <= max(known) + 1e-4
    else:
        assert summary["averageScore"] is None


HEADER = {"gates": ["passed", "blocked"], "checkpoints": ["waiting", "approved"]}
GATES = [
    {"name": "first", "afterTasks": ["A"], "blocksTasks": ["B"], "minScore": 3},
    {"name": "quality", "afterTasks": ["A", "C"], "blocksTasks": ["D"], "minScore": 4.5, "requireAllPassed": False},
]
CHECKPOINTS = [
    {"name": "review", "afterTasks": ["A"], "blocksTasks": ["D"], "message": "Look at A"},
    {"name": "later", "afterTasks": ["C"], "message": "done already"},
]
STATES = [
    {"taskId": "t_a", "title": "A", "status": "completed", "score": 4.0, "attempt": 1},
    {"taskId": "t_c", "title": "C", "status": "failed", "score": 2.0, "attempt": 3},
    {"taskId": "t_e", "title": "E", "status": "awaiting_approval", "attempt": 2, "error": "worker lost"},
]


def test_a_paused_run_waits_for_its_blocked_gates_waiting_checkpoints_and_tasks_awaiting_approval() -> None:
    gate, checkpoint, approval = waiting_for(HEADER, GATES, CHECKPOINTS, STATES)
    assert gate == {
        "kind": "quality_gate",
        "index": 1,
        "name": "quality",
        "minScore": 4.5,
        "requireAllPassed": False,
        "score": 3.0,
        "afterTasks": [
            {"id": "t_a", "title": "A", "status": "completed", "score": 4.0},
            {"id": "t_c", "title": "C", "status": "failed", "score": 2.0},
        ],
        "blocksTasks": ["D"],
    }
    assert checkpoint == {
        "kind": "checkpoint",
        "index": 0,
        "name": "review",
        "message": "Look at A",
        "afterTasks": ["A"],
        "blocksTasks": ["D"],
    }
    assert approval == {"kind": "approval", "task": {"id": "t_e", "title": "E", "attempt": 2}, "reason": "worker lost"}


def test_a_cause_the_state_no_longer_holds_is_not_reported() -> None:
    header = {"gates": ["passed", "overridden"], "checkpoints": ["approved", "pending"]}
    assert waiting_for(header, GATES, CHECKPOINTS, STATES[:2]) == []


@given(
    failures=st.integers(0, 8),
    max_retries=st.integers(0, 4),
    fallback=st.sampled_from([None, "senior"]),
    model=st.sampled_from([None, "openai/huge"]),
    after=st.one_of(st.none(), st.integers(0, 4)),
)
def test_an_attempt_is_escalated_exactly_when_the_engine_assigned_it_past_its_escalation_point(
    failures: int, max_retries: int, fallback: str | None, model: str | None, after: int | None
) -> None:
    from orchestrator.engine import assignment

    policy: dict[str, object] = {}
    if fallback:
        policy["fallbackAgent"] = fallback
    if model:
        policy["escalateModel"] = model
    if after is not None:
        policy["escalateAfter"] = min(after, max_retries)
    spec = task(maxRetries=max_retries, retryPolicy=policy)
    agent, chosen = assignment(spec, failures, AGENTS)
    # The policy as documented: escalate after escalateAfter failures, else after the whole budget.
    point = None if not policy or set(policy) == {"escalateAfter"} else policy.get("escalateAfter", 1 + max_retries)
    assert escalation(spec, AGENTS, agent, chosen)["escalated"] is (point is not None and failures >= point)
