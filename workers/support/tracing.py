"""OpenTelemetry traces, off unless the operator configures an exporter the usual way.

Tracing is on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set,
or ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``), and ``OTEL_SDK_DISABLED`` is
not ``true``. Every other ``OTEL_*`` setting keeps its standard meaning (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_BSP_*``...); the OTLP exporter
is the HTTP/protobuf one.

``configure(role)`` is called once at the start of each process that does traced work (an API
server process, a worker), before it opens connections. It installs the SDK's tracer provider and
the maintained instrumentations of psycopg and httpx (and ``httpx2``, through which the openai
and anthropic SDKs call models); the API adds Flask's, and ``workers.messaging`` Celery's and Redis' (which carries the
trace context in each message's headers). The hand-made spans are only those no instrumentation
knows: ``missions.step`` (a coordinator step), ``missions.attempt``, ``missions.agent`` (the agent's
run, around its provider calls) and ``missions.assessment``, with the run, mission, task and
attempt ids as attributes (``missions.run_id`` ...).

What starts a trace (the sampler): a request, a message received, a hand-made span; not a client
call that has no parent (the heartbeat watcher's Redis reads and Postgres writes, a pool's checks)
and not the beat tick, which would add a trace a second. A run's work sent from a request or an
attempt continues that trace: the request that executes a mission, the messages it publishes, the
attempts, their steps and the messages those publish, down to the end of the run.

Work on a run that none of its messages started joins its trace through the run's row: the run
stores the ``traceparent`` of the step that began it (``traceparent()``, written by the statement
that inserts the run; NULL while tracing is off or outside a sampled trace). A schedule's fire is
a trace of its own (``root``: the tick's spans are not sampled), so a scheduled run has one too.
The beat tick's timers (``missions.timer``: a retry after its backoff, people's
timeouts, delays, the deadline) and repairs (``missions.repair``: lost workers, stale
assessments, lost messages, agent-slot grants), and a later request's command on the run
(``missions.command``: resume, abort, review, a task's retry, reassess or cancel, task edits while
it runs) run in ``continued(stored, ...)``: a span whose parent is the stored context, so that the
messages it publishes and the attempts they start are the run's. It is linked with the span current
when it starts, both ways (a request's: its own trace and the run's point at each other; the tick's
spans are not recorded, so nothing is linked there).

While tracing is off, ``span`` and ``continued`` return one shared no-op context manager: the cost
on the hot path is a function call and a test of a module flag (``bench/tracing_overhead.py``); the
run stores NULL in the statement that inserts it, and the tick's statements do not read it.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

log = logging.getLogger(__name__)

TICK_SPAN_SUFFIX = "/missions.tick"  # Celery's instrumentation names spans "<operation>/<task name>"


class _State:
    enabled = False
    configured_pid: int | None = None


_state = _State()


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for traces (see the module docstring)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def enabled() -> bool:
    return _state.enabled


def configure(role: str, environ: Mapping[str, str] | None = None) -> bool:
    """Install tracing for this process (``role``: ``api``, ``worker``) when the environment asks
    for it; True when traces are on. Once per process (a forked child configures its own)."""
    if _state.configured_pid == os.getpid():
        return _state.enabled
    _state.configured_pid = os.getpid()
    env = os.environ if environ is None else environ
    if not wanted(env):
        _state.enabled = False
        return False
    from opentelemetry import trace
    from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor, HTTPXClientInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    from opentelemetry.sdk.trace.sampling import ParentBased

    attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": f"missions-{role}"}
    provider = TracerProvider(resource=Resource.create(attributes), sampler=ParentBased(root=_root_sampler()))
    exporters: list[SpanExporter] = []
    for name in (env.get("OTEL_TRACES_EXPORTER") or "otlp").split(","):
        match name.strip().lower():
            case "otlp":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                exporters.append(OTLPSpanExporter())
            case "console":
                exporters.append(ConsoleSpanExporter())
            case "none" | "":
                pass
            case other:
                log.warning("OTEL_TRACES_EXPORTER: unknown exporter %r ignored (otlp, console)", other)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    PsycopgInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    HTTPX2ClientInstrumentor().instrument(tracer_provider=provider)  # what the openai and anthropic SDKs use
    _state.enabled = True
    log.info("tracing on: %s spans to %s", role, ", ".join(type(e).__name__ for e in exporters) or "nowhere")
    return True


class _Noop:
    """What ``span`` yields while tracing is off: attributes set on it go nowhere."""

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        pass


_NOOP_SPAN = _Noop()
_NOOP = nullcontext(_NOOP_SPAN)


def span(name: str, attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[Any]:
    """A span of its own, child of the current one (a shared no-op while tracing is off). Its
    attributes: the ``missions.*`` ids of what it works on; ``None`` values are left out."""
    if not _state.enabled:
        return _NOOP
    return _span(name, attributes)


@contextmanager
def _span(name: str, attributes: Mapping[str, Any] | None, parent: Any = None, links: Any = None) -> Iterator[Any]:
    """The span ``name``, child of ``parent`` (an OpenTelemetry context; None: the current one)."""
    from opentelemetry import trace

    clean = {k: v for k, v in (attributes or {}).items() if v is not None}
    tracer = trace.get_tracer("missions")
    with tracer.start_as_current_span(name, parent, attributes=clean, links=links) as current:
        yield current


def ids(
    run_id: str | None = None,
    mission_id: str | None = None,
    task_id: str | None = None,
    attempt: int | None = None,
) -> dict[str, Any]:
    """The attribute names of a run's ids, as every hand-made span carries them."""
    return {
        "missions.run_id": run_id,
        "missions.mission_id": mission_id,
        "missions.task_id": task_id,
        "missions.attempt": attempt,
    }


def capture() -> Any:
    """The current trace context, to continue it in another thread (None while tracing is off)."""
    if not _state.enabled:
        return None
    from opentelemetry import context

    return context.get_current()


@contextmanager
def restored(captured: Any) -> Iterator[None]:
    """Run the block in the context ``capture`` returned (nothing while tracing is off)."""
    if captured is None:
        yield
        return
    from opentelemetry import context

    token = context.attach(captured)
    try:
        yield
    finally:
        context.detach(token)


def traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, to store with what outlives it (a run begun
    under it, so that its later work can be ``continued`` in the same trace). None while tracing is
    off, with no span current, or when the current trace is not sampled (the beat tick's; a
    schedule's fire opens a ``root`` span first, so its run has a trace)."""
    if not _state.enabled:
        return None
    from opentelemetry import trace

    if not trace.get_current_span().get_span_context().trace_flags.sampled:
        return None
    carrier: dict[str, str] = {}
    _propagator().inject(carrier)
    return carrier.get("traceparent")


def continued(
    stored: str | None, name: str, attributes: Mapping[str, Any] | None = None
) -> AbstractContextManager[Any]:
    """A span in the trace ``stored`` names (a ``traceparent`` as ``traceparent`` gave it), for work
    on a run that the run's own messages did not start: the beat tick's timers and repairs, a later
    request on the run. Its parent is the stored context, so what the block publishes (Celery's
    instrumentation injects the current context) and the attempts those messages start are in the
    run's trace. It is linked to the span current when it starts (a request's), and that span to
    it, so each trace points at the other. The shared no-op while tracing is off or nothing is
    stored; a plain child of the current span when the stored value cannot be read."""
    if not _state.enabled or not stored:
        return _NOOP
    return _continued(stored, name, attributes)


@contextmanager
def _continued(stored: str, name: str, attributes: Mapping[str, Any] | None) -> Iterator[Any]:
    from opentelemetry import trace

    parent = _propagator().extract({"traceparent": stored})
    run = trace.get_current_span(parent).get_span_context()
    if not run.is_valid:
        log.debug("unreadable stored trace context %r; the span stays in the current trace", stored)
        with _span(name, attributes) as current:
            yield current
        return
    caller = trace.get_current_span()
    here = caller.get_span_context()
    linked = caller.is_recording() and here.trace_id != run.trace_id  # (the tick's spans are not recorded)
    with _span(name, attributes, parent, [trace.Link(here)] if linked else None) as current:
        if linked:
            caller.add_link(current.get_span_context())
        yield current


def root(name: str, attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[Any]:
    """A span that starts a trace of its own, whatever is current: for work that begins a run's
    life outside any request, a schedule's fire inside the beat tick (whose own spans are not
    sampled, so a child of theirs would be dropped with them). The run it begins stores this trace
    (``traceparent``), so the run's work is one trace as for a run a request began. The shared no-op
    while tracing is off."""
    if not _state.enabled:
        return _NOOP
    from opentelemetry import context

    return _span(name, attributes, context.Context())  # (an empty context: no parent)


@functools.cache
def _propagator() -> Any:
    """W3C trace context whatever ``OTEL_PROPAGATORS`` says: what is stored is a ``traceparent``."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


def annotate(attributes: Mapping[str, Any]) -> None:
    """Set attributes on the current span (``None`` values left out; nothing while tracing is off)."""
    if not _state.enabled:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attributes({k: v for k, v in attributes.items() if v is not None})


def _root_sampler() -> Any:
    """Which spans without a parent start a trace: not client calls, not the tick's (built on first
    use: the SDK is imported only when tracing is on)."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
    from opentelemetry.trace import SpanKind

    class RootSampler(Sampler):
        def should_sample(
            self,
            parent_context: Any,
            trace_id: int,
            name: str,
            kind: Any = None,
            attributes: Any = None,
            links: Any = None,
            trace_state: Any = None,
        ) -> Any:
            if kind == SpanKind.CLIENT or name.endswith(TICK_SPAN_SUFFIX):
                return SamplingResult(Decision.DROP)
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

        def get_description(self) -> str:
            return "MissionsRootSampler"

    return RootSampler()
