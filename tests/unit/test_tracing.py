"""Tracing is off unless the OTEL_* environment asks for it, and costs a no-op while off."""

from __future__ import annotations

import pytest

from tests.support.spans import hex_ids, in_memory_traces
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


# -- a run's stored trace, continued -----------------------------------------------------------------
STORED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_while_off_nothing_is_stored_and_continuing_is_the_shared_no_op() -> None:
    assert not tracing.enabled()
    assert tracing.traceparent() is None
    assert tracing.continued(STORED, "missions.timer") is tracing.span("missions.step")
    assert tracing.continued(None, "missions.timer") is tracing.span("missions.step")


def test_the_traceparent_of_the_current_span_is_what_a_run_stores() -> None:
    with in_memory_traces():
        assert tracing.traceparent() is None  # no span current
        with tracing.span("missions.step") as step:
            stored = tracing.traceparent()
    trace_id, span_id = hex_ids(step.get_span_context())
    assert stored is not None and stored.startswith(f"00-{trace_id}-{span_id}-")
    assert int(stored[-2:], 16) & 1  # sampled


def test_a_span_of_a_trace_not_sampled_stores_nothing() -> None:
    # (Each context manager of a with statement is made once the ones before it were entered.)
    with (
        in_memory_traces() as exporter,
        tracing.span(f"run{tracing.TICK_SPAN_SUFFIX}"),  # the tick's: dropped
        tracing.span("missions.step"),
    ):
        assert tracing.traceparent() is None
    assert exporter.get_finished_spans() == ()


def test_continued_is_a_child_of_the_stored_context_linked_both_ways_with_the_current_span() -> None:
    with in_memory_traces() as exporter:
        with (
            tracing.span("POST /v1/missions/m/resume") as request,
            tracing.continued(STORED, "missions.command", {"missions.run_id": "run_1", "x": None}) as span,
            tracing.span("missions.step"),
        ):
            inner = tracing.traceparent()
        spans = {s.name: s for s in exporter.get_finished_spans()}
    command, step, outer = spans["missions.command"], spans["missions.step"], spans["POST /v1/missions/m/resume"]
    assert hex_ids(command.context)[0] == "0af7651916cd43dd8448eb211c80319c"
    assert command.parent is not None and hex_ids(command.parent) == (
        "0af7651916cd43dd8448eb211c80319c",
        "b7ad6b7169203331",
    )
    assert command.parent.is_remote
    assert dict(command.attributes or {}) == {"missions.run_id": "run_1"}
    # What the block does (and publishes: Celery injects the current context) is in the run's trace.
    assert step.parent is not None and step.parent.span_id == command.context.span_id
    assert inner is not None and inner.startswith("00-0af7651916cd43dd8448eb211c80319c-")
    # Each trace points at the other.
    assert [link.context for link in command.links] == [request.get_span_context()]
    assert [link.context for link in outer.links] == [span.get_span_context()]
    assert outer.context.trace_id != command.context.trace_id


def test_continued_under_the_tick_is_traced_though_the_tick_is_not_and_links_nothing() -> None:
    with (
        in_memory_traces() as exporter,
        tracing.span(f"run{tracing.TICK_SPAN_SUFFIX}"),
        tracing.continued(STORED, "missions.timer"),
        tracing.span("missions.step"),
    ):
        pass
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"missions.timer", "missions.step"}  # the tick's own span is still dropped
    assert spans["missions.timer"].links == ()
    assert {hex_ids(s.context)[0] for s in spans.values()} == {"0af7651916cd43dd8448eb211c80319c"}


def test_continued_with_nothing_stored_is_the_no_op_and_an_unreadable_value_a_plain_child() -> None:
    with in_memory_traces() as exporter:
        assert tracing.continued(None, "missions.timer") is tracing.continued("", "missions.timer")
        with tracing.continued(None, "missions.timer"):
            pass
        assert exporter.get_finished_spans() == ()
        with tracing.span("missions.attempt") as attempt, tracing.continued("not-a-traceparent", "missions.timer"):
            pass
        [timer] = [s for s in exporter.get_finished_spans() if s.name == "missions.timer"]
    assert timer.parent is not None and timer.parent.span_id == attempt.get_span_context().span_id
    assert timer.links == ()
