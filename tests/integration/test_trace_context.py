"""A run's trace context on its row (``runs.traceparent``): written when the run begins while
tracing is on (NULL while it is off), read by the tick with the rows it takes only while tracing is
on, and continued by the tick's timers and by a later request on the run (tracing in memory,
``tests/support/spans.py``; the messages' headers and the worker's side are the e2e test's)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from tests.support import shell
from tests.support.spans import hex_ids, in_memory_traces
from workers.coordination import runs
from workers.coordination.tick import fire_timers
from workers.execution.executor import Executor
from workers.store import missions, timers
from workers.store.projects import ensure_project
from workers.support import tracing
from workers.support.clock import utcnow
from workers.wiring import Services

LIMITS = missions.Limits()
RETRIED = {
    "name": "traced",
    "tasks": [{"title": "A", "description": "d", "assignTo": "a", "maxRetries": 1, "retryPolicy": {"backoff": 30}}],
    "team": {
        "name": "t",
        "volatile": True,
        "agents": [{"name": "a", "role": "r", "model": "scripted/x", "script": [{"fail": "once"}, {"output": "ok"}]}],
    },
}


def _start(services: Services) -> tuple[str, str]:
    with services.transaction() as conn:
        project = ensure_project(conn, "p")
        mission = missions.create_mission(conn, project, RETRIED, LIMITS)
        run_id, *_ = runs.execute(shell.uow(conn), project, mission.id, LIMITS, utcnow())
    return run_id, mission.tasks[0].id or ""


def _stored(db: psycopg.Connection, run_id: str) -> Any:
    return db.execute("SELECT traceparent FROM runs WHERE id = %s", (run_id,)).fetchone()["traceparent"]


@pytest.fixture
def executor(services: Services) -> Executor:
    return shell.executor(services, "test-worker")


def test_a_run_begun_while_tracing_is_off_stores_no_trace_context(services: Services, db: psycopg.Connection) -> None:
    assert not tracing.enabled()
    run_id, _ = _start(services)
    assert _stored(db, run_id) is None


def test_a_run_begun_in_a_trace_stores_its_first_step_and_the_retry_timer_continues_it(
    services: Services, executor: Executor, db: psycopg.Connection
) -> None:
    with in_memory_traces() as exporter:
        with tracing.span("POST /v1/missions/{id}/execute") as request:
            run_id, task_id = _start(services)
        [begun] = [s for s in exporter.get_finished_spans() if s.attributes.get("missions.event") == "RunStarted"]
        trace_id, span_id = hex_ids(begun.context)
        assert trace_id == hex_ids(request.get_span_context())[0]
        assert _stored(db, run_id).startswith(f"00-{trace_id}-{span_id}-")

        assert executor.run_attempt(run_id, task_id, 1) == "failed"
        due = db.execute("SELECT due_at FROM timers WHERE run_id = %s", (run_id,)).fetchone()["due_at"]
        exporter.clear()
        with tracing.span(f"run{tracing.TICK_SPAN_SUFFIX}"):  # the tick's own span is not sampled
            assert fire_timers(executor.coordinator, due + timedelta(seconds=1)) == 1
        spans = exporter.get_finished_spans()

    [timer] = [s for s in spans if s.name == "missions.timer"]
    assert timer.parent is not None and hex_ids(timer.parent) == (trace_id, span_id)
    assert timer.attributes is not None and timer.attributes["missions.run_id"] == run_id
    assert timer.attributes["missions.timer"] == "retry"
    [step] = [s for s in spans if s.name == "missions.step"]
    assert step.attributes is not None and step.attributes["missions.event"] == "RetryDue"
    assert step.parent is not None and step.parent.span_id == timer.context.span_id
    assert timer.links == ()  # nothing to link to: the tick's span is not recorded
    assert not [s for s in spans if s.name.endswith(tracing.TICK_SPAN_SUFFIX)]


def test_the_tick_reads_the_trace_context_only_while_tracing_is_on(services: Services, db: psycopg.Connection) -> None:
    with in_memory_traces(), tracing.span("POST /v1/missions/{id}/execute"):
        run_id, _ = _start(services)
    stored = _stored(db, run_id)
    db.execute(
        "INSERT INTO timers (run_id, kind, key, due_at) VALUES (%s, 'delay', 'd', now() - interval '1s')", (run_id,)
    )
    db.commit()
    with services.transaction() as conn:
        taken = timers.take_due(conn, utcnow())
        conn.rollback()  # (the timer stays, for the read below)
    assert taken is not None and taken["traceparent"] is None
    with in_memory_traces(), services.transaction() as conn:
        taken = timers.take_due(conn, utcnow())
    assert taken is not None and taken["traceparent"] == stored


def test_a_later_request_on_the_run_works_in_the_runs_trace_linked_with_the_requests(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    with in_memory_traces() as exporter:
        mission_id = client.post("/v1/missions", json=RETRIED, headers=auth).get_json()["id"]
        with tracing.span("POST /v1/missions/{id}/execute"):
            run_id = client.post(f"/v1/missions/{mission_id}/execute", headers=auth).get_json()["id"]
        stored = _stored(db, run_id)
        with tracing.span("POST /v1/missions/{id}/abort") as request:
            assert client.post(f"/v1/missions/{mission_id}/abort", headers=auth).status_code == 200
        spans = exporter.get_finished_spans()

    [command] = [s for s in spans if s.name == "missions.command"]
    assert command.attributes is not None and command.attributes["missions.command"] == "abort"
    assert command.attributes["missions.run_id"] == run_id
    assert command.parent is not None and stored.startswith("00-{}-{}-".format(*hex_ids(command.parent)))
    [step] = [s for s in spans if s.name == "missions.step" and s.attributes.get("missions.event") == "AbortRequested"]
    assert step.parent is not None and step.parent.span_id == command.context.span_id
    # The request's trace and the run's point at each other.
    assert [link.context for link in command.links] == [request.get_span_context()]
    [outer] = [s for s in spans if s.name == "POST /v1/missions/{id}/abort"]
    assert [link.context for link in outer.links] == [command.context]


def test_a_scheduled_run_is_a_trace_of_its_own_though_the_tick_that_fired_it_is_not_traced(
    client: FlaskClient, auth: dict[str, str], services: Services, db: psycopg.Connection
) -> None:
    from datetime import UTC, datetime

    from workers.coordination import schedules

    document = {**RETRIED, "name": "nightly", "schedule": "0 2 * * *", "timezone": "UTC"}
    created = client.post("/v1/missions", json=document, headers=auth)
    assert created.status_code == 201, created.get_json()
    mission_id = created.get_json()["id"]
    fire_at = datetime(2026, 11, 23, 2, tzinfo=UTC)
    db.execute("UPDATE missions SET next_run_at = %s WHERE id = %s", (fire_at, mission_id))

    with in_memory_traces() as exporter:
        with tracing.span(f"run{tracing.TICK_SPAN_SUFFIX}"):  # the tick's own span is not sampled
            assert schedules.fire_due(shell.quiet_coordinator(services), LIMITS, fire_at + timedelta(seconds=1)) == 1
        spans = exporter.get_finished_spans()

    [fire] = [s for s in spans if s.name == "missions.schedule_fire"]
    assert fire.parent is None and fire.attributes["missions.mission_id"] == mission_id
    [begun] = [s for s in spans if s.attributes.get("missions.event") == "RunStarted"]
    assert begun.parent is not None and begun.parent.span_id == fire.context.span_id
    run_id = db.execute("SELECT id FROM runs WHERE mission_id = %s", (mission_id,)).fetchone()["id"]
    assert _stored(db, run_id).startswith(f"00-{hex_ids(begun.context)[0]}-{hex_ids(begun.context)[1]}-")
    assert not [s for s in spans if s.name.endswith(tracing.TICK_SPAN_SUFFIX)]


def test_without_tracing_a_schedule_fire_starts_no_span() -> None:
    assert not tracing.enabled()
    assert tracing.root("missions.schedule_fire") is tracing.span("anything")  # the one shared no-op
