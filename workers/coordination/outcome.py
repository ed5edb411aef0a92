"""What a committed change of a run asks of the outside world, and who carries it out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from orchestrator.engine import AssessTask, CancelTask, RunState, StartTask
from workers.store import run_state


class Inline(Protocol):
    """Work the worker thread that ran a step does itself once the step has committed, instead of
    sending it to the broker (``workers.execution.executor.Executor``)."""

    def assess(self, run_id: str, task_id: str, attempt: int) -> object:
        """Run the assessment the step asked for, in this thread; what happened."""
        ...

    def take(self, run_id: str, task_id: str, attempt: int) -> bool:
        """Eager hand-off: True when this thread runs the started (committed, queued) attempt
        itself once it is free, so its message is not sent; False to send it."""
        ...


@dataclass
class AfterCommit:
    """What a committed step asks of the outside world: attempts to send, assessments to run,
    attempts to signal to stop, webhook deliveries to send, and the wake-up of the run's event
    streams."""

    mission_id: str
    run_id: str
    start: list[StartTask] = field(default_factory=list)
    assess: list[AssessTask] = field(default_factory=list)
    cancel: list[CancelTask] = field(default_factory=list)
    last_event_id: int | None = None
    status: str = ""
    ignored: str | None = None
    stored: run_state.Stored | None = None  # the state this step read or wrote, cached after commit
    rows: run_state.Rows = field(default_factory=run_state.Rows)  # attempts and events, not yet written
    guard: dict[str, Any] | None = None  # the row the step's guard returned
    deliveries: list[str] = field(default_factory=list)  # webhook deliveries its events made, to send
    # Project-wide agent slots (workers.store.slots): the reusable agents whose slots the step asked
    # for or may have freed (granted after commit), and the started attempts that wait for a slot
    # (sent only once granted). Both empty for a mission without shared agent limits.
    slot_agents: set[str] = field(default_factory=set)
    slot_starts: set[tuple[str, int]] = field(default_factory=set)

    @property
    def state(self) -> RunState | None:
        return self.stored.state if self.stored is not None else None

    def merge(self, other: AfterCommit | None) -> AfterCommit:
        if other is None:
            return self
        self.start += other.start
        self.assess += other.assess
        self.cancel += other.cancel
        self.deliveries += other.deliveries
        self.slot_agents |= other.slot_agents
        self.slot_starts |= other.slot_starts
        if other.last_event_id is not None:
            self.last_event_id = max(self.last_event_id or 0, other.last_event_id)
        self.status = other.status or self.status
        if other.stored is not None and (self.stored is None or other.stored.version >= self.stored.version):
            self.stored = other.stored
        return self


class Sender(Protocol):
    """Carries out a committed ``AfterCommit`` (``workers.messaging.dispatch.Dispatcher``). A failure
    to send is logged, never raised: the tick repairs what was not sent."""

    def send(self, outcome: AfterCommit, inline: Inline | None = None) -> None: ...


class Resender(Protocol):
    """What the tick's repair sends again, and whether the broker's queue is empty."""

    def send_attempts(self, run_id: str, attempts: list[tuple[str, int]]) -> bool: ...

    def send_assessment(self, run_id: str, task_id: str, attempt: int) -> bool: ...

    def send_deliveries(self, delivery_ids: list[str]) -> bool: ...

    def queue_empty(self) -> bool: ...
