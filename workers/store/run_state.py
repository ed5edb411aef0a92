"""A run's state in Postgres, written by difference and read through a per-process cache.

The pure engine works on a whole ``RunState``; a mission may have thousands of tasks, so the
shell never re-reads or re-writes the whole state on each step:

- ``runs.state`` holds the run-level fields, ``runs.spec`` the spec (with ``spec_version``), and
  ``run_tasks`` one row per task stamped with the run ``version`` that last wrote it;
- ``save`` writes the run row and only the task rows whose state object changed;
- ``load`` keeps the last state it saw of each run in a process-wide cache. When the locked row
  carries the cached write's token, the cached object is used as it is; when other processes moved
  the run on, only the task rows written since the cached version are read; only a new spec (or a
  cold cache) reads everything.
- ``save`` caches what it writes at once, marked unconfirmed: another thread of this process that
  takes the row lock right after the commit finds the same token and reuses the state (with its
  warm indexes) instead of reading it back. A write that rolled back leaves a token no row has, so
  it is never used, and an unconfirmed entry is never the base of an incremental read.
  ``remember`` (after commit) marks an entry confirmed.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from orchestrator.engine import RunState, TaskState
from orchestrator.spec import MissionSpec
from workers.store.attempts import Guard
from workers.store.queries import query
from workers.support import tracing

CACHE_SIZE = 512

_LOCK = query("lock_run")
_READ = query("read_run")
_SPEC_AND_TASKS = query("read_run_spec_and_tasks")
_READ_ALL = query("read_run_all")
_TASKS_SINCE = query("run_tasks_since")
_DELETE_TASKS = query("delete_run_tasks")
_UPDATE_SPEC = query("update_run_spec")
_SAVE = query("save_step")
_CREATE = query("create_run")
MIRROR_MISSION = query("mirror_mission")
# The statement that locks the run row together with each guard, and the one-statement step with
# each guard (None: no guard), by the guard's name.
_LOCK_GUARDED = {name: query(f"lock_run_{name}") for name in ("recording_result", "recording_score", "marking_lost")}
_SAVE_IF_CURRENT: dict[str | None, str] = {
    None: query("save_step_if_current"),
    **{name: query(f"save_step_if_current_{name}") for name in ("recording_result", "recording_score")},
}


@dataclass(frozen=True)
class Stored:
    """A state as written: its run version, spec version and write token; ``confirmed`` once it is
    known to be committed."""

    version: int
    spec_version: int
    state: RunState
    token: str | None = None
    confirmed: bool = True


class RunCache:
    """The last committed state seen of each run, least recently used dropped first, and which runs
    other processes have been seen to move on (``likely_current``)."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._items: OrderedDict[str, Stored] = OrderedDict()
        self._stale: set[str] = set()
        self._lock = threading.Lock()

    def get(self, run_id: str) -> Stored | None:
        with self._lock:
            item = self._items.get(run_id)
            if item is not None:
                self._items.move_to_end(run_id)
            return item

    def put(self, run_id: str, item: Stored) -> None:
        with self._lock:
            current = self._items.get(run_id)
            if current is not None and current.version > item.version:
                return  # a newer state is already known
            self._items[run_id] = item
            self._items.move_to_end(run_id)
            while len(self._items) > self._size:
                dropped, _ = self._items.popitem(last=False)
                self._stale.discard(dropped)

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._items.pop(run_id, None)
            self._stale.discard(run_id)

    def likely_current(self, run_id: str) -> Stored | None:
        """The cached state, unless the last look at the run's row found that another process had
        moved it on (then the next look is expected to find the same)."""
        with self._lock:
            return None if run_id in self._stale else self._items.get(run_id)

    def note_stale(self, run_id: str) -> None:
        with self._lock:
            if run_id in self._items:
                self._stale.add(run_id)

    def note_current(self, run_id: str) -> None:
        with self._lock:
            self._stale.discard(run_id)


class KeyedLocks:
    """One mutex per key, held only while someone uses it (no growth with the number of keys)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[threading.Lock, list[int]]] = {}
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._guard:
                users[0] -= 1
                if not users[0]:
                    del self._locks[key]


CACHE = RunCache()
# Per run, in this process: who may read the run for the process (``peek``), and who may decide a
# step on the cached state (``coordinator.step_if_current``).
LOADING = KeyedLocks()
DECIDING = KeyedLocks()


def load(conn: psycopg.Connection[Any], run_id: str, *, lock: bool = True) -> Stored | None:
    """The run's current state (locking its row unless ``lock`` is False), cache-assisted."""
    if lock:
        row = conn.execute(_LOCK, {"run_id": run_id}).fetchone()
    else:
        row = conn.execute(_READ if CACHE.get(run_id) is not None else _READ_ALL, {"run_id": run_id}).fetchone()
    return _state(conn, run_id, row)


def lock_guarded(conn: psycopg.Connection[Any], run_id: str, guard: Guard) -> tuple[Stored | None, Any]:
    """Run ``guard`` and lock the run row in one statement: the run's state (None when the run no
    longer exists) and the guard's returned row as a dict (None when it matched nothing)."""
    row = conn.execute(_LOCK_GUARDED[guard.name], {**guard.params, "run_id": run_id}).fetchone()
    return _state(conn, run_id, row), (row["guard"] if row is not None else None)


def _state(conn: psycopg.Connection[Any], run_id: str, row: Any) -> Stored | None:
    if row is None:
        CACHE.forget(run_id)
        return None
    version, spec_version, token = int(row["version"]), int(row["spec_version"]), row["state_token"]
    cached = CACHE.get(run_id)
    if cached is not None and cached.version == version and cached.token == token:
        CACHE.note_current(run_id)
        return cached if cached.confirmed else replace(cached, confirmed=True)
    if cached is not None:
        CACHE.note_stale(run_id)  # another process wrote the run since this one last did
    if cached is not None and cached.confirmed and cached.spec_version == spec_version and cached.version < version:
        spec = cached.state.spec
        tasks = dict(cached.state.tasks)
        for changed in conn.execute(_TASKS_SINCE, {"run_id": run_id, "version": cached.version}):
            task = TaskState.from_json(changed["state"])
            tasks[task.task_id] = task
    else:
        full = row if "spec" in row else conn.execute(_SPEC_AND_TASKS, {"run_id": run_id}).fetchone()
        assert full is not None
        spec = MissionSpec.from_document(full["spec"])
        order = {task.id: i for i, task in enumerate(spec.tasks)}
        loaded = [TaskState.from_json(state) for state in full["tasks"]]
        loaded.sort(key=lambda t: order.get(t.task_id, len(order)))
        tasks = {t.task_id: t for t in loaded}
    stored = Stored(version, spec_version, RunState.from_parts(row["state"], spec, tasks), token)
    CACHE.put(run_id, stored)  # a committed version (what the row shows), whatever this transaction does
    return stored


def peek(conn: psycopg.Connection[Any], run_id: str) -> Stored | None:
    """The last state of the run this process saw or wrote, without checking that it is current
    (it may be older than the row, or not yet committed), read (without a lock) only when the
    process has none; None when the run does not exist. Good for what cannot change once an
    attempt exists: that attempt's task, the team, the budget.

    Threads that miss the same run at once (the first attempts of a new run, claimed together)
    wait for one of them to read it instead of each reading every task."""
    cached = CACHE.get(run_id)
    if cached is not None:
        return cached
    with LOADING.hold(run_id):
        return CACHE.get(run_id) or load(conn, run_id, lock=False)


def new_token() -> str:
    return secrets.token_hex(8)


def create(
    conn: psycopg.Connection[Any],
    state: RunState,
    *,
    number: int,
    deadline: datetime | None,
    now: datetime,
    terminal: bool,
    rows: Rows,
    run_input: Any = None,
) -> tuple[Stored, int | None, list[str]]:
    """Insert run ``number`` of its mission at version 0 with ``state`` and the first ``rows``
    (``run_input``: the run's own data, as given); returns the stored state (not yet known to be
    committed), the last event id and the webhook deliveries the events made. While tracing is on,
    the row keeps the current trace context (the run's beginning step), which the tick and later
    requests on the run continue (``tracing.continued``); NULL otherwise, at no extra cost."""
    token = new_token()
    row = conn.execute(
        _CREATE,
        {
            "run_id": state.run_id,
            "mission_id": state.mission_id,
            "number": number,
            "status": state.status.value,
            "spec": Jsonb(state.spec.to_document()),
            "state": Jsonb(state.header_json()),
            "deadline": deadline,
            "now": now,
            "terminal": terminal,
            "failure_reason": state.failure_reason,
            "token": token,
            "input": Jsonb(run_input) if run_input is not None else None,
            "traceparent": tracing.traceparent(),
            "tasks": tasks_param(list(state.tasks.values())),
            **rows.params(),
        },
    ).fetchone()
    stored = Stored(0, 0, state, token, confirmed=False)
    CACHE.put(state.run_id, stored)
    return stored, _last_event_id(row), _deliveries(row)


@dataclass
class Rows:
    """What a step adds besides the state: the attempts it starts and the events it logs."""

    attempts: list[dict[str, Any]] = field(default_factory=list)  # task_id, attempt, agent, model, prompt
    event_types: list[str] = field(default_factory=list)
    event_data: list[Any] = field(default_factory=list)

    def params(self) -> dict[str, Any]:
        return {"attempts": Jsonb(self.attempts), "events": events_param(self.event_types, self.event_data)}

    def add_report(self, report: Mapping[str, Any]) -> None:
        """Put the run's report into the step's ``mission:done`` event (and so into its webhook
        deliveries, which copy the event), as ``reports.attach_report_to_done`` does after a write
        (and, like it, nothing when the step logs no ``mission:done``)."""
        for i in range(len(self.event_types) - 1, -1, -1):
            if self.event_types[i] == "mission:done":
                self.event_data[i] = {**self.event_data[i], "report": report}
                return


def _last_event_id(row: Any) -> int | None:
    last = row["last_event_id"] if row is not None else None
    return int(last) if last is not None else None


def _deliveries(row: Any) -> list[str]:
    """The ids of the webhook deliveries (the outbox rows) a statement wrote with its events."""
    ids = row["deliveries"] if row is not None else None
    return list(ids) if ids else []


def _changes(before: Stored, after: RunState, changed_ids: frozenset[str] | None) -> tuple[list[TaskState], list[str]]:
    """The task states that changed from ``before`` to ``after`` and the ids of the tasks removed
    (found by ``changed_ids`` when the decision names them, else by comparing the two states)."""
    old = before.state
    if changed_ids is None:
        changed_ids = frozenset(
            i for i in old.tasks.keys() | after.tasks.keys() if old.tasks.get(i) is not after.tasks.get(i)
        )
    return [after.tasks[i] for i in changed_ids if i in after.tasks], [i for i in changed_ids if i not in after.tasks]


def _write_params(
    after: RunState,
    version: int,
    token: str,
    changed: list[TaskState],
    now: datetime,
    terminal: bool,
    rows: Rows | None,
) -> dict[str, Any]:
    return {
        "run_id": after.run_id,
        "mission_id": after.mission_id,
        "tasks": tasks_param(changed),
        "state": Jsonb(after.header_json()),
        "status": after.status.value,
        "pause_reason": after.pause_reason.value if after.pause_reason else None,
        "pause_message": after.pause_message,
        "failure_reason": after.failure_reason,
        "version": version,
        "token": token,
        "terminal": terminal,
        "now": now,
        **(rows or Rows()).params(),
    }


def save(
    conn: psycopg.Connection[Any],
    before: Stored,
    after: RunState,
    now: datetime,
    terminal: bool,
    changed_ids: frozenset[str] | None = None,
    rows: Rows | None = None,
) -> tuple[Stored, int | None, list[str]]:
    """Write what changed from ``before`` to ``after`` (the run row and the changed task rows)
    together with the step's ``rows`` (attempts started, events, and the webhook deliveries of
    those events), under the run lock the caller holds; returns the stored state, the last event
    id and the deliveries' ids."""
    changed, removed = _changes(before, after, changed_ids)
    if removed:
        conn.execute(_DELETE_TASKS, {"run_id": after.run_id, "ids": removed})
    spec_version = before.spec_version
    if after.spec is not before.state.spec:
        spec_version += 1
        conn.execute(
            _UPDATE_SPEC,
            {"run_id": after.run_id, "spec": Jsonb(after.spec.to_document()), "spec_version": spec_version},
        )
    version, token = before.version + 1, new_token()
    row = conn.execute(_SAVE, _write_params(after, version, token, changed, now, terminal, rows)).fetchone()
    stored = Stored(version, spec_version, after, token, confirmed=False)
    CACHE.put(after.run_id, stored)  # usable by this process once the row shows the same token
    return stored, _last_event_id(row), _deliveries(row)


@dataclass(frozen=True)
class Written:
    """What ``save_if_current`` did: ``stored`` is None when the guard matched nothing (and nothing
    was written)."""

    stored: Stored | None
    guard: Any
    last_event_id: int | None
    deliveries: list[str] = field(default_factory=list)


def save_if_current(
    conn: psycopg.Connection[Any],
    before: Stored,
    after: RunState,
    now: datetime,
    terminal: bool,
    guard: Guard | None,
    *,
    changed_ids: frozenset[str] | None = None,
    rows: Rows | None = None,
    mirror: bool = False,
) -> Written | None:
    """Write a step decided on ``before`` in one statement that commits on its own (``conn`` in
    autocommit): lock the run row and, if it still holds ``before`` and ``guard`` (if any) matches,
    write the changed task rows, the run row, ``rows`` and (``mirror``) the mission's status. None
    when the run has moved on from ``before``: nothing was written. Only for a step that keeps the
    spec and every task (the caller checks)."""
    changed, removed = _changes(before, after, changed_ids)
    if removed or after.spec is not before.state.spec:
        raise ValueError("save_if_current writes neither a new spec nor removed tasks")
    statement = _SAVE_IF_CURRENT.get(guard.name if guard is not None else None)
    if statement is None:
        raise ValueError(f"no one-statement step records the guard {guard.name if guard else None!r}")
    version, token = before.version + 1, new_token()
    row = conn.execute(
        statement,
        {
            **(guard.params if guard is not None else {}),
            **_write_params(after, version, token, changed, now, terminal, rows),
            "expected_version": before.version,
            "expected_token": before.token,
            "mirror": mirror,
        },
    ).fetchone()
    assert row is not None
    if not row["current"]:
        CACHE.note_stale(after.run_id)
        return None
    if row["guard"] is None:
        return Written(None, None, None)
    stored = Stored(version, before.spec_version, after, token)  # committed: the statement was its transaction
    CACHE.put(after.run_id, stored)
    return Written(stored, row["guard"], _last_event_id(row), _deliveries(row))


def tasks_param(tasks: list[TaskState]) -> Jsonb:
    """Task states as one JSON array of ``{"id", "state"}`` (for ``jsonb_to_recordset``)."""
    return Jsonb([{"id": t.task_id, "state": t.to_json()} for t in tasks])


def events_param(types: list[str], datas: list[Any]) -> Jsonb:
    """Events as one JSON array of ``{"type", "data"}``, in order (for ``jsonb_array_elements``)."""
    return Jsonb([{"type": t, "data": d} for t, d in zip(types, datas, strict=True)])


def remember(run_id: str, stored: Stored | None) -> None:
    """After commit: the state just written (or read) is known to be committed."""
    if stored is not None:
        CACHE.put(run_id, stored if stored.confirmed else replace(stored, confirmed=True))


def mirror_mission(conn: psycopg.Connection[Any], state: RunState, now: datetime, *, terminal: bool) -> None:
    """The mission mirrors the status of its latest run (inside a locking step)."""
    conn.execute(
        MIRROR_MISSION,
        {
            "status": state.status.value,
            "now": now,
            "mission_id": state.mission_id,
            "run_id": state.run_id,
            "terminal": terminal,
        },
    )


def records_in_one_statement(guard: Guard) -> bool:
    """Whether a one-statement step can record ``guard`` (else the step takes the lock)."""
    return guard.name in _SAVE_IF_CURRENT
