"""What an attempt adds to its task's report once a guard has written it (``attempts.usage_after``),
from its row as read before the step: the figures the step that ends a run puts in ``mission:done``
before its statement runs, so they must follow that statement's SQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.engine import AttemptStatus
from orchestrator.report import AttemptUsage
from workers.store import attempts

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def row(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "created_at": T0,
        "claimed_at": T0 + timedelta(seconds=1),
        "finished_at": None,
        "assessed_at": None,
        "tokens_in": 0,
        "tokens_out": 0,
        "cost_usd": 0.0,
        "judge_tokens_in": 0,
        "judge_tokens_out": 0,
        "judge_cost_usd": 0.0,
    }
    return {**base, **changes}


def result(now: datetime, tokens_in: int, tokens_out: int, cost: float) -> attempts.Guard:
    return attempts.record_result(
        "run_1", "task_a", 1, now=now, status=AttemptStatus.COMPLETED, output="x", error=None,
        tokens_in=tokens_in, tokens_out=tokens_out, cost=cost, outcomes=[],
    )  # fmt: skip


def score(now: datetime, tokens_in: int, tokens_out: int, cost: float) -> attempts.Guard:
    return attempts.record_score(
        "run_1", "task_a", 1, now=now, status=AttemptStatus.COMPLETED, score=4.0, assessment={},
        judge_model="scripted/judge", judge_tokens_in=tokens_in, judge_tokens_out=tokens_out, judge_cost=cost,
    )  # fmt: skip


def test_an_agents_result_sets_its_usage_and_ends_the_attempt_now() -> None:
    ended = T0 + timedelta(seconds=4)
    assert attempts.usage_after(result(ended, 10, 20, 0.5), row()) == AttemptUsage(
        tokens_in=10, tokens_out=20, cost_usd=0.5, queued_at=T0, claimed_at=T0 + timedelta(seconds=1), ended_at=ended
    )


def test_a_verdict_adds_the_judges_usage_to_what_the_attempt_and_earlier_verdicts_spent() -> None:
    # A reassessed attempt: its agent's usage and a first verdict's are on the row already.
    before = row(
        finished_at=T0 + timedelta(seconds=3), assessed_at=T0 + timedelta(seconds=4), tokens_in=10,
        tokens_out=20, cost_usd=0.5, judge_tokens_in=3, judge_tokens_out=1, judge_cost_usd=0.25,
    )  # fmt: skip
    verdict = T0 + timedelta(seconds=9)
    usage = attempts.usage_after(score(verdict, 2, 2, 0.125), before)
    assert usage == AttemptUsage(
        tokens_in=15,
        tokens_out=23,
        cost_usd=0.875,
        queued_at=T0,
        claimed_at=T0 + timedelta(seconds=1),
        ended_at=verdict,
    )


def test_a_result_after_a_verdict_keeps_the_verdict_as_the_attempts_end() -> None:
    # (as the report's coalesce(assessed_at, finished_at) reads it)
    judged = T0 + timedelta(seconds=2)
    usage = attempts.usage_after(result(T0 + timedelta(seconds=5), 1, 1, 0.0), row(assessed_at=judged))
    assert usage is not None and usage.ended_at == judged


def test_a_guard_whose_writes_it_does_not_follow_gives_nothing() -> None:
    assert attempts.usage_after(attempts.mark_lost("run_1", "task_a", 1, now=T0), row()) is None
