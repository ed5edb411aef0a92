"""Providers classify what went wrong (``ProviderError.code``), so the core can tell a failure a
retry may fix from one it cannot."""

from __future__ import annotations

import threading

import pytest

from config import Settings
from orchestrator.failures import ErrorCode
from orchestrator.spec import AgentSpec
from workers.execution.agents import AgentCall, UnavailableProvider
from workers.execution.providers import Providers
from workers.execution.providers.base import ProviderError, status_error


def classify(status: int, error_type: str | None = None) -> ErrorCode:
    return status_error("openai", "http://x", "m", "OPENAI_API_KEY", status, "nope", {}, error_type).code


@pytest.mark.parametrize(
    ("status", "error_type", "code"),
    [
        (401, None, ErrorCode.AUTH_FAILED),
        (403, None, ErrorCode.AUTH_FAILED),
        (404, None, ErrorCode.MODEL_NOT_FOUND),
        (400, "model_not_found", ErrorCode.MODEL_NOT_FOUND),
        (400, "invalid_request_error", ErrorCode.INVALID_REQUEST),
        (422, None, ErrorCode.INVALID_REQUEST),
        (402, None, ErrorCode.PROVIDER_ERROR),
        (429, None, ErrorCode.PROVIDER_UNAVAILABLE),
        (503, None, ErrorCode.PROVIDER_UNAVAILABLE),
        (408, None, ErrorCode.PROVIDER_UNAVAILABLE),
    ],
)
def test_an_http_status_gets_the_code_of_what_went_wrong(status: int, error_type: str | None, code: ErrorCode) -> None:
    assert classify(status, error_type) is code


def test_a_transient_error_is_always_provider_unavailable() -> None:
    assert ProviderError("x", transient=True, code=ErrorCode.AUTH_FAILED).code is ErrorCode.PROVIDER_UNAVAILABLE


def test_a_missing_key_and_an_unknown_profile_are_classified_before_any_call() -> None:
    providers = Providers(Settings(), environ={})
    with pytest.raises(ProviderError) as missing:
        providers.client("openai/gpt-test", {})
    assert missing.value.code is ErrorCode.MISSING_KEY
    with pytest.raises(ProviderError) as profile:
        providers.client("openai/gpt-test", {"profile": "nowhere"})
    assert profile.value.code is ErrorCode.CONFIGURATION_ERROR


def test_an_unavailable_provider_is_a_configuration_error() -> None:
    agent = AgentSpec(name="a", model="mistral/x")
    call = AgentCall("run", "task", "T", 1, agent, agent.model, "", "prompt")
    result = UnavailableProvider("mistral").run(call, threading.Event(), lambda _: None)
    assert result.error_code is ErrorCode.CONFIGURATION_ERROR
