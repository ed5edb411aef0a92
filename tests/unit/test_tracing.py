"""Tracing is off unless the OTEL_* environment asks for it, and costs a no-op while off."""

from __future__ import annotations

import pytest

from workers.support import tracing


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
    ],
)
def test_traces_are_wanted_only_when_an_exporter_is_configured(environ: dict[str, str], on: bool) -> None:
    assert tracing.wanted(environ) is on


def test_while_off_a_span_is_one_shared_no_op() -> None:
    assert tracing.configure("worker", {}) is False
    assert not tracing.enabled()
    first = tracing.span("missions.attempt", tracing.ids("run_1", "msn_1", "task_1", 1))
    assert first is tracing.span("missions.step")
    with first as span:
        span.set_attribute("missions.model", "openai/gpt-4o")
    tracing.annotate({"missions.mission_id": "msn_1"})
    assert tracing.capture() is None
    with tracing.restored(None):
        pass
