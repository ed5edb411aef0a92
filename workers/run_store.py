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
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from orchestrator.engine import RunState, TaskState
from orchestrator.spec import MissionSpec

CACHE_SIZE = 512

_LOCK = """
SELECT mission_id, status, state, version, spec_version, state_token FROM runs WHERE id = %(run_id)s FOR UPDATE
"""
# The lock taken together with a guard: a data-modifying statement whose RETURNING row (or NULL)
# comes back with the run row, in one round trip.
_LOCK_GUARDED = """
WITH guard AS ({guard})
SELECT r.mission_id, r.status, r.state, r.version, r.spec_version, r.state_token,
       (SELECT to_jsonb(guard) FROM guard) AS guard
  FROM runs r WHERE r.id = %(run_id)s FOR UPDATE OF r
"""
_READ = "SELECT mission_id, status, state, version, spec_version, state_token FROM runs WHERE id = %(run_id)s"
_SPEC = "SELECT spec FROM runs WHERE id = %(run_id)s"
_ALL_TASKS = "SELECT state FROM run_tasks WHERE run_id = %(run_id)s"
_TASKS_SINCE = "SELECT state FROM run_tasks WHERE run_id = %(run_id)s AND version > %(version)s"

# Rows travel as one JSON array (``tasks_param``, ``events_param``): one C-encoded parameter instead
# of text and jsonb arrays, whose per-element escaping in psycopg cost more than the statement.
_DELETE_TASKS = "DELETE FROM run_tasks WHERE run_id = %(run_id)s AND task_id = ANY(%(ids)s)"

# One round trip per step: the changed task rows, the run row and the step's events (ids allocated
# in the decided order, under the run lock the caller holds).
_SAVE = """
WITH changed AS (
    INSERT INTO run_tasks (run_id, task_id, version, state)
    SELECT %(run_id)s, t.id, %(version)s, t.state
      FROM jsonb_to_recordset(%(tasks)s) AS t(id text, state jsonb)
    ON CONFLICT (run_id, task_id) DO UPDATE SET version = EXCLUDED.version, state = EXCLUDED.state
), run AS (
    UPDATE runs
       SET state = %(state)s, status = %(status)s, pause_reason = %(pause_reason)s,
           pause_message = %(pause_message)s, failure_reason = %(failure_reason)s, version = %(version)s,
           state_token = %(token)s,
           finished_at = CASE WHEN %(terminal)s THEN coalesce(finished_at, %(now)s) ELSE NULL END
     WHERE id = %(run_id)s
), logged AS (
    INSERT INTO events (run_id, mission_id, type, data, created_at)
    SELECT %(run_id)s, %(mission_id)s, e.item->>'type', e.item->'data', %(now)s
      FROM jsonb_array_elements(%(events)s) WITH ORDINALITY AS e(item, n)
     ORDER BY e.n
    RETURNING id
)
SELECT max(id) AS last_event_id FROM logged
"""
_UPDATE_SPEC = "UPDATE runs SET spec = %(spec)s, spec_version = %(spec_version)s WHERE id = %(run_id)s"


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
    """The last committed state seen of each run, least recently used dropped first."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._items: OrderedDict[str, Stored] = OrderedDict()
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
                self._items.popitem(last=False)

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._items.pop(run_id, None)


CACHE = RunCache()


@dataclass(frozen=True)
class Guard:
    """A data-modifying statement (``UPDATE ... RETURNING ...``) to run in the statement that locks
    the run row, e.g. claiming an attempt; the step goes on only when it returned a row."""

    sql: str
    params: dict[str, Any]


def load(conn: psycopg.Connection[Any], run_id: str, *, lock: bool = True) -> Stored | None:
    """The run's current state (locking its row unless ``lock`` is False), cache-assisted."""
    row = conn.execute(_LOCK if lock else _READ, {"run_id": run_id}).fetchone()
    return _state(conn, run_id, row)


def lock_guarded(conn: psycopg.Connection[Any], run_id: str, guard: Guard) -> tuple[Stored | None, Any]:
    """Run ``guard`` and lock the run row in one statement: the run's state (None when the run no
    longer exists) and the guard's returned row as a dict (None when it matched nothing)."""
    sql = _LOCK_GUARDED.format(guard=guard.sql.strip())
    row = conn.execute(sql, {**guard.params, "run_id": run_id}).fetchone()
    return _state(conn, run_id, row), (row["guard"] if row is not None else None)


def _state(conn: psycopg.Connection[Any], run_id: str, row: Any) -> Stored | None:
    if row is None:
        CACHE.forget(run_id)
        return None
    version, spec_version, token = int(row["version"]), int(row["spec_version"]), row["state_token"]
    cached = CACHE.get(run_id)
    if cached is not None and cached.version == version and cached.token == token:
        return cached if cached.confirmed else replace(cached, confirmed=True)
    if (cached is not None and cached.confirmed and cached.spec_version == spec_version
            and cached.version < version):
        spec = cached.state.spec
        tasks = dict(cached.state.tasks)
        for changed in conn.execute(_TASKS_SINCE, {"run_id": run_id, "version": cached.version}):
            task = TaskState.from_json(changed["state"])
            tasks[task.task_id] = task
    else:
        spec_row = conn.execute(_SPEC, {"run_id": run_id}).fetchone()
        assert spec_row is not None
        spec = MissionSpec.from_document(spec_row["spec"])
        order = {task.id: i for i, task in enumerate(spec.tasks)}
        loaded = [TaskState.from_json(r["state"]) for r in conn.execute(_ALL_TASKS, {"run_id": run_id})]
        loaded.sort(key=lambda t: order.get(t.task_id, len(order)))
        tasks = {t.task_id: t for t in loaded}
    stored = Stored(version, spec_version, RunState.from_parts(row["state"], spec, tasks), token)
    CACHE.put(run_id, stored)  # a committed version (what the row shows), whatever this transaction does
    return stored


_loading: dict[str, threading.Lock] = {}
_loading_guard = threading.Lock()


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
    with _loading_guard:
        gate = _loading.setdefault(run_id, threading.Lock())
    try:
        with gate:
            return CACHE.get(run_id) or load(conn, run_id, lock=False)
    finally:
        with _loading_guard:
            _loading.pop(run_id, None)


def new_token() -> str:
    return secrets.token_hex(8)


def inserted(state: RunState, token: str) -> Stored:
    """The state of a run just inserted (version 0, ``token``), not yet known to be committed."""
    return Stored(0, 0, state, token, confirmed=False)


def save(conn: psycopg.Connection[Any], before: Stored, after: RunState, now: datetime, terminal: bool,
         changed_ids: frozenset[str] | None = None,
         events: tuple[list[str], list[Any]] = ([], [])) -> tuple[Stored, int | None]:
    """Write what changed from ``before`` to ``after`` (the run row and the changed task rows, found
    by ``changed_ids`` when the decision names them, else by comparing the two states) together
    with the step's ``events`` (types, JSON data); returns the stored state and the last event id."""
    version = before.version + 1
    old = before.state
    if changed_ids is None:
        changed_ids = frozenset(i for i in old.tasks.keys() | after.tasks.keys()
                                if old.tasks.get(i) is not after.tasks.get(i))
    changed = [after.tasks[i] for i in changed_ids if i in after.tasks]
    removed = [i for i in changed_ids if i not in after.tasks]
    if removed:
        conn.execute(_DELETE_TASKS, {"run_id": after.run_id, "ids": removed})
    spec_version = before.spec_version
    if after.spec is not old.spec:
        spec_version += 1
        conn.execute(_UPDATE_SPEC, {"run_id": after.run_id, "spec": Jsonb(after.spec.to_document()),
                                    "spec_version": spec_version})
    token = new_token()
    types, datas = events
    row = conn.execute(_SAVE, {
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
        "events": events_param(types, datas),
    }).fetchone()
    stored = Stored(version, spec_version, after, token, confirmed=False)
    CACHE.put(after.run_id, stored)  # usable by this process once the row shows the same token
    last = row["last_event_id"] if row is not None else None
    return stored, int(last) if last is not None else None


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
