"""The retry rule for failures no retry can fix, and the ``error`` event, in the pure core."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.engine import (
    AssessmentScored,
    DeadlineReached,
    PublishEvent,
    StartTask,
    TaskFailed,
    TaskStatus,
    TaskTimedOut,
    max_attempts,
)
from orchestrator.failures import NON_RETRYABLE, AfterFailure, ErrorCode, after_failure, error_code, is_retryable
from tests.unit.test_engine import JUDGED, Run, mission


def errors(decision: Any) -> list[Mapping[str, Any]]:
    return [e.data for e in decision.effects if isinstance(e, PublishEvent) and e.type == "error"]


def started(decision: Any) -> list[StartTask]:
    return [e for e in decision.effects if isinstance(e, StartTask)]


# -- the rule on its own ----------------------------------------------------------------------------
def dev_then_senior(failed: int) -> tuple[str, str]:
    return ("senior", "scripted/senior") if failed >= 1 else ("dev", "scripted/dev")


def test_a_retryable_failure_counts_against_the_budget() -> None:
    assert after_failure(
        code=ErrorCode.AGENT_ERROR,
        failed_before=0,
        budget=3,
        current=("dev", "scripted/dev"),
        escalation_point=None,
        assignment_after=dev_then_senior,
    ) == AfterFailure(1, final=False)


def test_a_missing_key_without_escalation_fails_at_once_and_says_why() -> None:
    verdict = after_failure(
        code=ErrorCode.MISSING_KEY,
        failed_before=0,
        budget=3,
        current=("dev", "scripted/dev"),
        escalation_point=None,
        assignment_after=dev_then_senior,
    )
    assert verdict.final and verdict.failed_attempts == 1
    assert verdict.note == "not retried: the provider key is missing, and a retry cannot fix that"


def test_a_non_retryable_failure_escalates_at_once_when_the_escalation_differs() -> None:
    verdict = after_failure(
        code=ErrorCode.AUTH_FAILED,
        failed_before=0,
        budget=4,
        current=("dev", "scripted/dev"),
        escalation_point=2,
        assignment_after=lambda n: ("senior", "openai/big") if n >= 2 else ("dev", "scripted/dev"),
    )
    assert verdict == AfterFailure(
        2,
        final=False,
        note="not retried with the same agent and model (the provider rejected the credentials); "
        "escalating to agent senior with model openai/big",
    )


def test_a_non_retryable_failure_of_the_escalated_attempt_fails_the_task() -> None:
    verdict = after_failure(
        code=ErrorCode.MODEL_NOT_FOUND,
        failed_before=1,
        budget=3,
        current=("senior", "scripted/senior"),
        escalation_point=1,
        assignment_after=dev_then_senior,
    )
    assert verdict.final and verdict.failed_attempts == 2


def test_an_escalation_to_the_same_agent_and_model_is_no_reason_to_try_again() -> None:
    verdict = after_failure(
        code=ErrorCode.INVALID_REQUEST,
        failed_before=0,
        budget=4,
        current=("dev", "scripted/dev"),
        escalation_point=1,
        assignment_after=lambda _: ("dev", "scripted/dev"),
    )
    assert verdict.final


def test_an_unknown_code_is_read_as_an_agent_error() -> None:
    assert error_code("something new") is ErrorCode.AGENT_ERROR
    assert error_code(None, ErrorCode.ASSESSMENT_FAILED) is ErrorCode.ASSESSMENT_FAILED
    assert error_code("missing_key") is ErrorCode.MISSING_KEY


agents = st.sampled_from(["dev", "senior", "ops"])
models = st.sampled_from(["", "scripted/a", "openai/b"])


@given(
    code=st.sampled_from(list(ErrorCode)),
    failed_before=st.integers(0, 6),
    extra=st.integers(1, 6),
    current=st.tuples(agents, models),
    escalation_point=st.none() | st.integers(0, 8),
    base=st.tuples(agents, models),
    escalated=st.tuples(agents, models),
)
def test_the_rule_never_retries_what_cannot_be_fixed_and_never_exceeds_the_budget(
    code: ErrorCode,
    failed_before: int,
    extra: int,
    current: tuple[str, str],
    escalation_point: int | None,
    base: tuple[str, str],
    escalated: tuple[str, str],
) -> None:
    budget = failed_before + extra  # the task is still within its budget before this failure

    def assignment_after(n: int) -> tuple[str, str]:
        return escalated if escalation_point is not None and n >= escalation_point else base

    verdict = after_failure(
        code=code,
        failed_before=failed_before,
        budget=budget,
        current=current,
        escalation_point=escalation_point,
        assignment_after=assignment_after,
    )
    assert verdict.failed_attempts > failed_before
    assert verdict.failed_attempts <= budget
    assert verdict.final == (verdict.failed_attempts >= budget) or not is_retryable(code)
    if is_retryable(code):
        assert verdict == AfterFailure(failed_before + 1, final=failed_before + 1 >= budget)
    elif not verdict.final:
        assert assignment_after(verdict.failed_attempts) != current
        assert "not retried" in verdict.note
    else:
        assert "not retried" in verdict.note


# -- the rule in a run ------------------------------------------------------------------------------
def test_a_missing_key_fails_the_task_at_once_without_spending_a_retry() -> None:
    run = Run(mission({"id": "a", "maxRetries": 3}))
    decision = run.send(TaskFailed("a", 1, "no API key for openai/x", ErrorCode.MISSING_KEY))
    task = run.task("a")
    assert task.status is TaskStatus.FAILED and task.attempt == 1
    assert "not retried: the provider key is missing" in (task.error or "")
    assert not started(decision)
    (error,) = errors(decision)
    assert error == {
        "missionId": "msn_1",
        "runId": "run_1",
        "code": "missing_key",
        "message": task.error,
        "taskId": "a",
        "title": "a",
        "attempt": 1,
        "agent": "dev",
        "model": "scripted/dev",
        "willRetry": False,
    }
    assert run.state.status.value == "failed"


def test_a_non_retryable_failure_goes_to_the_fallback_agent_at_once() -> None:
    run = Run(mission({"id": "a", "maxRetries": 2, "retryPolicy": {"fallbackAgent": "senior"}}))
    decision = run.send(TaskFailed("a", 1, "HTTP 401", ErrorCode.AUTH_FAILED))
    assert [(s.attempt, s.agent) for s in started(decision)] == [(2, "senior")]
    assert errors(decision)[0]["willRetry"] is True
    # The fallback fails the same way: nothing is left to try.
    decision = run.send(TaskFailed("a", 2, "HTTP 401", ErrorCode.AUTH_FAILED))
    assert run.task("a").status is TaskStatus.FAILED and not started(decision)
    assert run.task("a").attempt == 2 < max_attempts(run.state.task_spec("a"))


def test_a_retryable_failure_is_retried_and_streamed_as_an_error_that_will_retry() -> None:
    run = Run(mission({"id": "a", "maxRetries": 1}))
    decision = run.fail("a", "the agent gave up")
    (error,) = errors(decision)
    assert (error["code"], error["willRetry"], error["attempt"]) == ("agent_error", True, 1)
    assert [s.attempt for s in started(decision)] == [2]


def test_a_timeout_and_a_low_score_are_streamed_with_their_codes() -> None:
    run = Run(mission({"id": "a", "timeout": 5, "expectations": JUDGED}))
    run.claim("a")
    assert errors(run.send(TaskTimedOut("a", 1)))[0]["code"] == "timeout"
    run.finish("a")
    decision = run.send(AssessmentScored("a", 2, 1.5, ({"criterion": "is correct", "score": 1.5},)))
    assert errors(decision)[0]["code"] == "low_score"


def test_a_judge_that_cannot_work_fails_the_task_without_retrying_it() -> None:
    run = Run(mission({"id": "a", "maxRetries": 2, "expectations": JUDGED}))
    run.finish("a")
    decision = run.send(AssessmentScored("a", 1, None, (), "judge: no API key", ErrorCode.MISSING_KEY))
    assert run.task("a").status is TaskStatus.FAILED
    assert errors(decision)[0]["code"] == "missing_key"


def test_a_run_stopped_at_its_deadline_streams_an_error_before_it_ends() -> None:
    run = Run(mission({"id": "a"}, deadlineAfter=60))
    decision = run.send(DeadlineReached(), after=60)
    types = [e.type for e in decision.effects if isinstance(e, PublishEvent)]
    assert types.index("error") < types.index("mission:done")
    (error,) = errors(decision)
    assert error["code"] == "deadline_exceeded" and "taskId" not in error


def test_every_non_retryable_code_has_a_reason() -> None:
    for code in NON_RETRYABLE:
        verdict = after_failure(
            code=code,
            failed_before=0,
            budget=2,
            current=("dev", ""),
            escalation_point=None,
            assignment_after=lambda _: ("dev", ""),
        )
        assert verdict.final and verdict.note.startswith("not retried: ")
