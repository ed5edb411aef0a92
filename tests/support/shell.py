"""Shell objects built the way a test needs them: wake-ups published inline (no publisher thread),
and units of work on a connection the test holds."""

from __future__ import annotations

from workers.coordination.advance import Coordinator, UnitOfWork
from workers.coordination.outcome import AfterCommit, Inline
from workers.execution.executor import Executor
from workers.execution.providers import Providers
from workers.messaging.dispatch import Dispatcher
from workers.store.db import Connection
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
