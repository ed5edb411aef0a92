"""Slots of reusable agents' ``maxConcurrency``, shared by every run of a project (``agent_slots``).

An attempt of a reusable agent with a limit (``MissionSpec.shared_agent_limits``) gets a row when
the step that starts it commits, and its message is sent only once the row is granted. A slot is
held while the attempt is queued or running: as soon as the attempt is anything else (its agent
finished, failed, was cancelled, or its worker was lost and the reaper marked it), the next grant
for that agent drops the row. So a slot is never leaked: a lost worker's attempt stops being
``running`` when the reaper marks it lost (its heartbeat is its lease), and every step that ends
such an attempt, and the tick, grant what became free.

Grants for one (project, agent) take a transaction-scoped advisory lock, so two processes never
hand out the same free slot; waiters are served first come, first served across the project's
runs, each against the limit its run was started with.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from orchestrator.engine import LIVE_ATTEMPT_STATUSES
from workers.store.db import Connection
from workers.store.queries import query

REQUEST = query("request_agent_slots")
PROJECT_OF_RUN = query("project_of_run")
LOCK = query("lock_agent_slots")
DROP_STALE = query("drop_stale_agent_slots")
HELD = query("held_agent_slots")
WAITING = query("waiting_for_agent_slots")
GRANT = query("grant_agent_slots")
AGENTS_WAITING = query("agents_waiting_for_slots")

LIVE = [s.value for s in LIVE_ATTEMPT_STATUSES]
GRANT_BATCH = 500  # waiters looked at per grant (a limit above it is served over several grants)

Key = tuple[str, str, int]  # (run_id, task_id, attempt)


@dataclass(frozen=True)
class SlotRequest:
    """An attempt of a reusable agent with a limit, as the step that started it asks for its slot."""

    agent: str
    task_id: str
    attempt: int
    max_concurrency: int


def request(conn: Connection, run_id: str, wanted: Iterable[SlotRequest], now: datetime) -> None:
    """Queue the attempts for their agents' slots (in the transaction that inserted the attempts)."""
    rows = [
        {"agent": w.agent, "task_id": w.task_id, "attempt": w.attempt, "max_concurrency": w.max_concurrency}
        for w in wanted
    ]
    if rows:
        conn.execute(REQUEST, {"run_id": run_id, "wanted": Jsonb(rows), "now": now})


def project_of(conn: Connection, run_id: str) -> str | None:
    row = conn.execute(PROJECT_OF_RUN, {"run_id": run_id}).fetchone()
    return str(row["project_id"]) if row is not None else None


def grant(conn: Connection, project_id: str, agent: str, now: datetime) -> list[Key]:
    """Hand the free slots of one agent to its oldest waiters (in the caller's transaction); returns
    the attempts granted, whose messages the caller sends after commit."""
    params: dict[str, Any] = {"project_id": project_id, "agent": agent}
    conn.execute(LOCK, params)
    conn.execute(DROP_STALE, {**params, "live": LIVE})
    held_row = conn.execute(HELD, params).fetchone()
    held = int(held_row["held"]) if held_row is not None else 0
    chosen: list[dict[str, Any]] = []
    for row in conn.execute(WAITING, {**params, "limit": GRANT_BATCH}):
        if held >= int(row["max_concurrency"]):
            break  # first come, first served: a later waiter does not overtake
        chosen.append({"run_id": row["run_id"], "task_id": row["task_id"], "attempt": row["attempt"]})
        held += 1
    if not chosen:
        return []
    granted = conn.execute(GRANT, {"granted": Jsonb(chosen), "now": now}).fetchall()
    return [(str(r["run_id"]), str(r["task_id"]), int(r["attempt"])) for r in granted]


def agents_waiting(conn: Connection, limit: int) -> list[tuple[str, str]]:
    """(project_id, agent) pairs with an attempt waiting for a slot."""
    return [(str(r["project_id"]), str(r["agent"])) for r in conn.execute(AGENTS_WAITING, {"limit": limit})]
