"""Shell objects built the way a test needs them: wake-ups published inline (no publisher thread),
and units of work on a connection the test holds."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from workers.coordination import runs
from workers.coordination.advance import Coordinator, UnitOfWork
from workers.coordination.outcome import AfterCommit, Inline
from workers.execution import executor as executor_module
from workers.execution.executor import Executor
from workers.execution.providers import Providers
from workers.messaging.dispatch import Dispatcher
from workers.store import missions
from workers.store.db import Connection
from workers.store.projects import ensure_project
from workers.support.clock import utcnow
from workers.wiring import Services


def dispatcher(services: Services) -> Dispatcher:
    """A dispatcher that publishes wake-ups in the calling thread."""
    return Dispatcher(services.celery, services.redis)


def coordinator(services: Services) -> Coordinator:
    return Coordinator(services.db, dispatcher(services))


def executor(
    services: Services, worker: str = "test-worker", providers: Providers | None = None, *, eager: bool = False
) -> Executor:
    """An executor on ``services``; one ``run_attempt`` runs that one attempt (the tests step a run
    attempt by attempt), unless ``eager``: then it also runs what its steps hand off to it, with the
    services' ``eager_handoff_seconds`` (tests/integration/test_eager_handoff.py)."""
    sender = dispatcher(services)
    settings = services.settings if eager else services.settings.replace(eager_handoff_seconds=0.0)
    return Executor(settings, services.db, Coordinator(services.db, sender), sender.cancel_flags, worker, providers)


def uow(conn: Connection) -> UnitOfWork:
    """A unit of work inside the test's own transaction ``conn``; it sends nothing (the test sends
    what it wants with ``Coordinator.after_commit``)."""
    return UnitOfWork(conn, atomic=True)


class Discard:
    """A sender that sends nothing (a test that only looks at what was written)."""

    def send(self, outcome: AfterCommit, inline: Inline | None = None) -> None:
        return None


def quiet_coordinator(services: Services) -> Coordinator:
    """A coordinator whose units of work send nothing after commit."""
    return Coordinator(services.db, Discard())


def start_run(
    services: Services, tasks: list[dict[str, Any]], *, name: str = "m", send: bool = False
) -> tuple[str, dict[str, str]]:
    """Create a mission of ``tasks`` (by default a description and the one scripted agent ``a``,
    which answers "the result") in project ``p`` and start its run; the run's id and the task ids by
    title. With ``send`` the first attempts' messages go to the broker after commit (else nothing
    is sent: the test runs the attempts itself)."""
    for task in tasks:
        task.setdefault("description", "d")
        task.setdefault("assignTo", "a")
    document = {
        "name": name,
        "tasks": tasks,
        "team": {
            "name": "t",
            "volatile": True,
            "agents": [{"name": "a", "role": "r", "model": "scripted/x", "script": [{"output": "the result"}]}],
        },
    }
    limits = missions.Limits()
    with services.transaction() as conn:
        project = ensure_project(conn, "p")
        mission = missions.create_mission(conn, project, document, limits)
        run_id, outcome, *_ = runs.execute(uow(conn), project, mission.id, limits, utcnow())
    if send:
        coordinator(services).after_commit(outcome)
    return run_id, {t.title: t.id for t in mission.tasks}


def note_agent_runs(monkeypatch: pytest.MonkeyPatch, note: Callable[[Any], None]) -> None:
    """Call ``note(call)`` (the ``AgentCall``) each time the executor runs an agent, whatever its
    runtime; the agent then runs as it would."""
    original = executor_module.runtime_for

    def noted(model: str, providers: Any) -> Any:
        runtime = original(model, providers)

        class Noted:
            batch_output = getattr(runtime, "batch_output", False)

            def run(self, call: Any, cancel: threading.Event, emit: Any) -> Any:
                note(call)
                return runtime.run(call, cancel, emit)

        return Noted()

    monkeypatch.setattr(executor_module, "runtime_for", noted)
