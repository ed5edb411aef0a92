"""Tracing on inside one test process, its spans kept in memory: the SDK's tracer provider with the
sampler the product installs (``workers.support.tracing._root_sampler``), made the global one for
the block, and ``tracing.enabled()`` true. The SDK's globals are reset around it (as the SDK's own
test utilities do: a provider can otherwise be set once per process), so the block's spans are
its own and a later test finds tracing off again."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased
from opentelemetry.util._once import Once

from workers.support import tracing


def _reset_globals() -> None:
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@contextmanager
def in_memory_traces() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(root=tracing._root_sampler()))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset_globals()
    trace.set_tracer_provider(provider)
    was = tracing._state.enabled
    tracing._state.enabled = True
    try:
        yield exporter
    finally:
        tracing._state.enabled = was
        provider.shutdown()
        _reset_globals()


def hex_ids(context: trace.SpanContext) -> tuple[str, str]:
    """A span context's trace and span ids as a ``traceparent`` spells them."""
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)
