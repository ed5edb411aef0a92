"""Why an attempt failed, and whether trying again can help.

Every failure the core hears of carries a stable ``ErrorCode`` (the shell classifies what it
observed: a provider's HTTP status, a missing key, a timeout, a judge's verdict); the same code
is streamed in the ``error`` event, so a client can act on it without parsing messages.

The rule (``after_failure``): a failure whose code is retryable counts against the retry budget
as always. One that no retry can fix (``NON_RETRYABLE``: a missing key, rejected credentials, an
unknown model, a request the provider calls invalid, a configuration the worker cannot honour)
spends no retry on the same agent and model: the task fails at once, unless its retry policy
escalates to a different agent or model with budget left, in which case the next attempt is the
escalated one at once. Either way the message says why it was not retried.

Pure: no I/O; the same inputs always give the same answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class ErrorCode(StrEnum):
    """The stable codes of the ``error`` event (documented in docs/semantics.md and the OpenAPI)."""

    AGENT_ERROR = "agent_error"  # the agent reported an error (a scripted ``fail``, a runtime error)
    TIMEOUT = "timeout"  # the attempt ran out of its task's ``timeout``
    OUTCOME_MISSING = "outcome_missing"  # an ``expectedOutcomes`` item was not produced
    PROVIDER_UNAVAILABLE = "provider_unavailable"  # 429, 5xx, timeouts, connection errors, after the call's own retries
    PROVIDER_ERROR = "provider_error"  # an unexpected reply from a provider
    MISSING_KEY = "missing_key"  # the provider key is not set in the workers' environment
    AUTH_FAILED = "auth_failed"  # the provider rejected the credentials (401/403)
    MODEL_NOT_FOUND = "model_not_found"  # the provider does not know the model (404, model_not_found)
    INVALID_REQUEST = "invalid_request"  # the provider calls the request invalid (400/422)
    CONFIGURATION_ERROR = "configuration_error"  # the worker cannot honour the agent's endpoint or provider
    ASSESSMENT_FAILED = "assessment_failed"  # the judge or a check could not score the output
    LOW_SCORE = "low_score"  # the score is below the mission's quality threshold
    OUTCOME_UNKNOWN = "outcome_unknown"  # a side-effecting attempt lost its worker and was not approved again
    DEADLINE_EXCEEDED = "deadline_exceeded"  # the run was stopped at its deadline
    BUDGET_EXCEEDED = "budget_exceeded"  # the run was stopped over its budget


# Failures no retry of the same agent and model can fix.
NON_RETRYABLE: Final = frozenset(
    {
        ErrorCode.MISSING_KEY,
        ErrorCode.AUTH_FAILED,
        ErrorCode.MODEL_NOT_FOUND,
        ErrorCode.INVALID_REQUEST,
        ErrorCode.CONFIGURATION_ERROR,
    }
)

_WHY_NOT_RETRIED: Final = {
    ErrorCode.MISSING_KEY: "the provider key is missing",
    ErrorCode.AUTH_FAILED: "the provider rejected the credentials",
    ErrorCode.MODEL_NOT_FOUND: "the provider does not know the model",
    ErrorCode.INVALID_REQUEST: "the provider calls the request invalid",
    ErrorCode.CONFIGURATION_ERROR: "the agent's provider configuration cannot work on this server",
}


def error_code(value: str | None, default: ErrorCode = ErrorCode.AGENT_ERROR) -> ErrorCode:
    """The code named by ``value``; ``default`` for None or text that is no code (an older event)."""
    if value is None:
        return default
    try:
        return ErrorCode(value)
    except ValueError:
        return default


def is_retryable(code: ErrorCode) -> bool:
    return code not in NON_RETRYABLE


@dataclass(frozen=True)
class AfterFailure:
    """What a failed attempt leads to: the task's counted failures from now on, whether it is
    final (the task fails), and the note added to the failure's message (empty when none)."""

    failed_attempts: int
    final: bool
    note: str = ""


def after_failure(
    *,
    code: ErrorCode,
    failed_before: int,
    budget: int,
    current: tuple[str | None, str | None],
    escalation_point: int | None,
    assignment_after: Callable[[int], tuple[str, str]],
) -> AfterFailure:
    """The retry rule for one failure (see the module docstring).

    ``failed_before``: counted failures before this one; ``budget``: failures allowed before the
    task fails (``engine.max_attempts``); ``current``: the (agent, model) of the failed attempt;
    ``escalation_point``: after how many failures the policy escalates (None: no escalation);
    ``assignment_after(n)``: the (agent, model) of an attempt after ``n`` counted failures.
    """
    failed = failed_before + 1
    if is_retryable(code):
        return AfterFailure(failed, final=failed >= budget)
    why = _WHY_NOT_RETRIED[code]
    if escalation_point is not None:
        escalated_from = max(failed, escalation_point)
        if escalated_from < budget:
            agent, model = assignment_after(escalated_from)
            if (agent, model) != current:
                target = f"agent {agent}" + (f" with model {model}" if model else "")
                return AfterFailure(
                    escalated_from,
                    final=False,
                    note=f"not retried with the same agent and model ({why}); escalating to {target}",
                )
    return AfterFailure(failed, final=True, note=f"not retried: {why}, and a retry cannot fix that")
