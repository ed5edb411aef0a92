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

import functools
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from orchestrator.engine import RunState, TaskState
from orchestrator.spec import MissionSpec

CACHE_SIZE = 512

# What a step needs of the run row to use, or refresh, its cached state.
_ROW = "mission_id, status, state, version, spec_version, state_token"
# Everything else of a run this process has not seen: its spec and every task state.
_SPEC_AND_TASKS_COLUMNS = ("spec, (SELECT coalesce(jsonb_agg(state), '[]'::jsonb) FROM run_tasks"
                           " WHERE run_id = %(run_id)s) AS tasks")

_LOCK = f"SELECT {_ROW} FROM runs WHERE id = %(run_id)s FOR UPDATE"
# The lock taken together with a guard: a data-modifying statement whose RETURNING row (or NULL)
# comes back with the run row, in one round trip.
_LOCK_GUARDED = """
WITH guard AS ({guard})
SELECT r.mission_id, r.status, r.state, r.version, r.spec_version, r.state_token,
       (SELECT to_jsonb(guard) FROM guard) AS guard
  FROM runs r WHERE r.id = %(run_id)s FOR UPDATE OF r
"""
_READ = f"SELECT {_ROW} FROM runs WHERE id = %(run_id)s"
_SPEC_AND_TASKS = f"SELECT {_SPEC_AND_TASKS_COLUMNS} FROM runs WHERE id = %(run_id)s"
# A run this process has not seen, read without a lock: its row, spec and every task state at once.
_READ_ALL = f"SELECT {_ROW}, {_SPEC_AND_TASKS_COLUMNS} FROM runs WHERE id = %(run_id)s"
_TASKS_SINCE = "SELECT state FROM run_tasks WHERE run_id = %(run_id)s AND version > %(version)s"

# Rows travel as one JSON array (``tasks_param``, ``events_param``): one C-encoded parameter instead
# of text and jsonb arrays, whose per-element escaping in psycopg cost more than the statement.
_DELETE_TASKS = "DELETE FROM run_tasks WHERE run_id = %(run_id)s AND task_id = ANY(%(ids)s)"

# The rows every write of a run may carry: the attempts it starts (with their prompts) and its
# events (ids allocated in the decided order, under the run lock the caller holds); written only
# when ``{when}`` holds.
_STARTED_AND_LOGGED = """
started AS (
    INSERT INTO attempts (run_id, task_id, attempt, status, agent, model, prompt, created_at, sent_at)
    SELECT %(run_id)s, a.task_id, a.attempt, 'queued', a.agent, a.model, a.prompt, %(now)s, %(now)s
      FROM jsonb_to_recordset(%(attempts)s) AS a(task_id text, attempt int, agent text, model text, prompt text)
     WHERE {when}
    ON CONFLICT (run_id, task_id, attempt) DO NOTHING
), logged AS (
    INSERT INTO events (run_id, mission_id, type, data, created_at)
    SELECT %(run_id)s, %(mission_id)s, e.item->>'type', e.item->'data', %(now)s
      FROM jsonb_array_elements(%(events)s) WITH ORDINALITY AS e(item, n)
     WHERE {when}
     ORDER BY e.n
    RETURNING id
)"""

# The changed task rows and the run row of a step, written only when ``{when}`` holds.
_CHANGED_AND_RUN = """
changed AS (
    INSERT INTO run_tasks (run_id, task_id, version, state)
    SELECT %(run_id)s, t.id, %(version)s, t.state
      FROM jsonb_to_recordset(%(tasks)s) AS t(id text, state jsonb)
     WHERE {when}
    ON CONFLICT (run_id, task_id) DO UPDATE SET version = EXCLUDED.version, state = EXCLUDED.state
), run AS (
    UPDATE runs
       SET state = %(state)s, status = %(status)s, pause_reason = %(pause_reason)s,
           pause_message = %(pause_message)s, failure_reason = %(failure_reason)s, version = %(version)s,
           state_token = %(token)s,
           finished_at = CASE WHEN %(terminal)s THEN coalesce(finished_at, %(now)s) ELSE NULL END
     WHERE id = %(run_id)s AND {when}
)"""

# A mission mirrors its latest run; once that run ends, a mission with fires left is "scheduled".
MIRROR_MISSION = """
UPDATE missions
   SET status = CASE WHEN %(terminal)s AND next_run_at IS NOT NULL THEN 'scheduled' ELSE %(status)s END,
       updated_at = %(now)s
 WHERE id = %(mission_id)s AND latest_run_id = %(run_id)s"""

# One round trip per step (under the run lock the caller holds): the changed task rows, the run
# row, the started attempts and the events.
_SAVE = ("WITH " + _CHANGED_AND_RUN.format(when="true") + ", " + _STARTED_AND_LOGGED.format(when="true")
         + "\nSELECT max(id) AS last_event_id FROM logged")

# A whole step in one statement that commits on its own, decided on the state this process holds
# of the run: the run row is locked and everything is written only if the row still holds that
# state (its version and write token) and the guard (placed at ``{guard}``, conditioned on
# ``current``) matched. When the run moved on, nothing is written and ``current`` is false.
_SAVE_IF_CURRENT = """
WITH current AS (
    SELECT id FROM runs
     WHERE id = %(run_id)s AND version = %(expected_version)s AND state_token IS NOT DISTINCT FROM %(expected_token)s
       FOR UPDATE
), guard AS ({guard}), mission AS (""" + MIRROR_MISSION + """ AND %(mirror)s AND EXISTS (SELECT FROM guard)
), """ + _CHANGED_AND_RUN.format(when="EXISTS (SELECT FROM guard)") + ", " + \
    _STARTED_AND_LOGGED.format(when="EXISTS (SELECT FROM guard)") + """
SELECT EXISTS (SELECT FROM current) AS current, (SELECT to_jsonb(guard) FROM guard) AS guard,
       (SELECT max(id) FROM logged) AS last_event_id
"""

# A new run in one round trip: its row, its task rows, the mission's pointer to it, its first
# attempts and its events.
_CREATE = """
WITH run AS (
    INSERT INTO runs (id, mission_id, number, status, spec, state, deadline_at, created_at, started_at,
                      finished_at, failure_reason, state_token)
    VALUES (%(run_id)s, %(mission_id)s, %(number)s, %(status)s, %(spec)s, %(state)s, %(deadline)s, %(now)s,
            %(now)s, CASE WHEN %(terminal)s THEN %(now)s END, %(failure_reason)s, %(token)s)
), tasks AS (
    INSERT INTO run_tasks (run_id, task_id, version, state)
    SELECT %(run_id)s, t.id, 0, t.state FROM jsonb_to_recordset(%(tasks)s) AS t(id text, state jsonb)
), mission AS (
    UPDATE missions SET latest_run_id = %(run_id)s, execution_count = execution_count + 1, status = %(status)s,
           updated_at = %(now)s
     WHERE id = %(mission_id)s
), """ + _STARTED_AND_LOGGED.format(when="true") + "\nSELECT max(id) AS last_event_id FROM logged"
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


@dataclass(frozen=True)
class Guard:
    """A data-modifying statement (``UPDATE ... WHERE ... RETURNING ...``, its WHERE clause a
    conjunction) to run in the statement that locks the run row, e.g. recording an attempt; the
    step goes on only when it returned a row (at most one)."""

    sql: str
    params: dict[str, Any]


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
    row = conn.execute(_guarded(guard.sql), {**guard.params, "run_id": run_id}).fetchone()
    return _state(conn, run_id, row), (row["guard"] if row is not None else None)


@functools.lru_cache(maxsize=64)
def _guarded(guard_sql: str) -> str:
    """The lock statement around one guard (built once per guard, not per step)."""
    return _LOCK_GUARDED.format(guard=guard_sql.strip())


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
    if (cached is not None and cached.confirmed and cached.spec_version == spec_version
            and cached.version < version):
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


def create(conn: psycopg.Connection[Any], state: RunState, *, number: int, deadline: datetime | None,
           now: datetime, terminal: bool, rows: Rows) -> tuple[Stored, int | None]:
    """Insert run ``number`` of its mission at version 0 with ``state`` and the first ``rows``;
    returns the stored state (not yet known to be committed) and the last event id."""
    token = new_token()
    row = conn.execute(_CREATE, {
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
        "tasks": tasks_param(list(state.tasks.values())),
        **rows.params(),
    }).fetchone()
    stored = Stored(0, 0, state, token, confirmed=False)
    CACHE.put(state.run_id, stored)
    return stored, _last_event_id(row)


@dataclass
class Rows:
    """What a step adds besides the state: the attempts it starts and the events it logs."""

    attempts: list[dict[str, Any]] = field(default_factory=list)  # task_id, attempt, agent, model, prompt
    event_types: list[str] = field(default_factory=list)
    event_data: list[Any] = field(default_factory=list)

    def params(self) -> dict[str, Any]:
        return {"attempts": Jsonb(self.attempts), "events": events_param(self.event_types, self.event_data)}


def _last_event_id(row: Any) -> int | None:
    last = row["last_event_id"] if row is not None else None
    return int(last) if last is not None else None


def _changes(before: Stored, after: RunState, changed_ids: frozenset[str] | None) -> tuple[list[TaskState], list[str]]:
    """The task states that changed from ``before`` to ``after`` and the ids of the tasks removed
    (found by ``changed_ids`` when the decision names them, else by comparing the two states)."""
    old = before.state
    if changed_ids is None:
        changed_ids = frozenset(i for i in old.tasks.keys() | after.tasks.keys()
                                if old.tasks.get(i) is not after.tasks.get(i))
    return [after.tasks[i] for i in changed_ids if i in after.tasks], [i for i in changed_ids if i not in after.tasks]


def _write_params(after: RunState, version: int, token: str, changed: list[TaskState], now: datetime,
                  terminal: bool, rows: Rows | None) -> dict[str, Any]:
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


def save(conn: psycopg.Connection[Any], before: Stored, after: RunState, now: datetime, terminal: bool,
         changed_ids: frozenset[str] | None = None, rows: Rows | None = None) -> tuple[Stored, int | None]:
    """Write what changed from ``before`` to ``after`` (the run row and the changed task rows)
    together with the step's ``rows`` (attempts started, events), under the run lock the caller
    holds; returns the stored state and the last event id."""
    changed, removed = _changes(before, after, changed_ids)
    if removed:
        conn.execute(_DELETE_TASKS, {"run_id": after.run_id, "ids": removed})
    spec_version = before.spec_version
    if after.spec is not before.state.spec:
        spec_version += 1
        conn.execute(_UPDATE_SPEC, {"run_id": after.run_id, "spec": Jsonb(after.spec.to_document()),
                                    "spec_version": spec_version})
    version, token = before.version + 1, new_token()
    row = conn.execute(_SAVE, _write_params(after, version, token, changed, now, terminal, rows)).fetchone()
    stored = Stored(version, spec_version, after, token, confirmed=False)
    CACHE.put(after.run_id, stored)  # usable by this process once the row shows the same token
    return stored, _last_event_id(row)


@dataclass(frozen=True)
class Written:
    """What ``save_if_current`` did: ``stored`` is None when the guard matched nothing (and nothing
    was written)."""

    stored: Stored | None
    guard: Any
    last_event_id: int | None


def save_if_current(conn: psycopg.Connection[Any], before: Stored, after: RunState, now: datetime,
                    terminal: bool, guard: Guard | None, *, changed_ids: frozenset[str] | None = None,
                    rows: Rows | None = None, mirror: bool = False) -> Written | None:
    """Write a step decided on ``before`` in one statement that commits on its own (``conn`` in
    autocommit): lock the run row and, if it still holds ``before`` and ``guard`` (if any) matches,
    write the changed task rows, the run row, ``rows`` and (``mirror``) the mission's status. None
    when the run has moved on from ``before``: nothing was written. Only for a step that keeps the
    spec and every task (the caller checks)."""
    changed, removed = _changes(before, after, changed_ids)
    if removed or after.spec is not before.state.spec:
        raise ValueError("save_if_current writes neither a new spec nor removed tasks")
    version, token = before.version + 1, new_token()
    row = conn.execute(_if_current(guard.sql if guard is not None else None), {
        **{f"guard_{name}": value for name, value in (guard.params if guard is not None else {}).items()},
        **_write_params(after, version, token, changed, now, terminal, rows),
        "expected_version": before.version,
        "expected_token": before.token,
        "mirror": mirror,
    }).fetchone()
    assert row is not None
    if not row["current"]:
        CACHE.note_stale(after.run_id)
        return None
    if row["guard"] is None:
        return Written(None, None, None)
    stored = Stored(version, before.spec_version, after, token)  # committed: the statement was its transaction
    CACHE.put(after.run_id, stored)
    return Written(stored, row["guard"], _last_event_id(row))


@functools.lru_cache(maxsize=64)
def _if_current(guard_sql: str | None) -> str:
    """``_SAVE_IF_CURRENT`` around one guard, which applies only when the run row is current (its
    parameters renamed ``guard_<name>``: names such as ``status`` mean something else here); with
    no guard, the row being current is the only condition."""
    if guard_sql is None:
        return _SAVE_IF_CURRENT.replace("{guard}", "SELECT 1 AS current FROM current")
    guard_sql = re.sub(r"%\((\w+)\)s", r"%(guard_\1)s", guard_sql)
    head, returning, tail = guard_sql.strip().rpartition("RETURNING")
    if not returning:
        raise ValueError("a guard is an UPDATE ... RETURNING ... statement")
    return _SAVE_IF_CURRENT.replace(
        "{guard}", f"{head.rstrip()}\n   AND EXISTS (SELECT FROM current)\n{returning}{tail}")


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
