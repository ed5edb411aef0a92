"""Run history as the API reads it, and the project agents a new run freezes into its team."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workers.store.db import Connection
from workers.store.queries import query

GET_RUN = query("get_run")
LIST_RUNS = query("list_runs")
LIST_RUNS_AFTER = query("list_runs_after")
PROJECT_AGENTS_NAMED = query("project_agents_named")
LATEST_RUN_TRACE = query("latest_run_trace")
RUN_TRACES = query("run_traces")


def get_run(conn: Connection, mission_id: str, run_id: str) -> dict[str, Any] | None:
    """A run of the mission with its task states in the order of its spec."""
    row = conn.execute(GET_RUN, {"run_id": run_id, "mission_id": mission_id}).fetchone()
    return dict(row) if row is not None else None


def list_runs(
    conn: Connection, mission_id: str, limit: int, offset: int = 0, after: int | None = None
) -> list[dict[str, Any]]:
    """The mission's runs, newest first: ``offset`` rows in, or (keyset) those with a number below
    ``after`` (the last run of the previous page)."""
    if after is None:
        rows = conn.execute(LIST_RUNS, {"mission_id": mission_id, "limit": limit, "offset": offset}).fetchall()
    else:
        rows = conn.execute(LIST_RUNS_AFTER, {"mission_id": mission_id, "limit": limit, "number": after}).fetchall()
    return [dict(r) for r in rows]


def project_agents(conn: Connection, project_id: str, names: Sequence[str]) -> list[dict[str, Any]]:
    """The documents of the project's agents called ``names`` (those that exist)."""
    rows = conn.execute(PROJECT_AGENTS_NAMED, {"project_id": project_id, "names": list(names)}).fetchall()
    return [dict(r["document"]) for r in rows]


def latest_run_trace(conn: Connection, project_id: str, mission_id: str) -> dict[str, Any] | None:
    """The ``id``, ``status`` and ``traceparent`` of the mission's latest run; None before its first
    run (or for another project's mission)."""
    row = conn.execute(LATEST_RUN_TRACE, {"project_id": project_id, "mission_id": mission_id}).fetchone()
    return dict(row) if row is not None else None


def run_traces(conn: Connection, run_ids: Sequence[str]) -> dict[str, str]:
    """The ``traceparent`` of each of ``run_ids`` that has one."""
    rows = conn.execute(RUN_TRACES, {"run_ids": list(run_ids)}).fetchall()
    return {str(r["id"]): str(r["traceparent"]) for r in rows}
