"""Tokens and cost: totals per task, run and mission (the ``budget`` rule is ``orchestrator.budget``).

Every attempt row carries its agent's ``tokens_in``/``tokens_out``/``cost_usd`` and its judge's
``judge_tokens_in``/``judge_tokens_out``/``judge_cost_usd``; a total adds both. ``mission_usage``
answers a mission's total and its latest run's totals in one query, ``runs_usage`` those of some
runs (a page of them), for the API to render.
A budget applies to each run: ``{"maxCostUsd": n}`` and/or ``{"maxTokens": n}`` (in + out).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from workers.store.queries import query


@dataclass(frozen=True)
class Totals:
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    attempts: int = 0

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out

    def to_json(self) -> dict[str, Any]:
        """The API shape: ``{"tokensIn", "tokensOut", "costUsd", "attempts"}``."""
        return {
            "tokensIn": self.tokens_in,
            "tokensOut": self.tokens_out,
            "costUsd": round(self.cost_usd, 6),
            "attempts": self.attempts,
        }


@dataclass(frozen=True)
class MissionUsage:
    total: Totals = Totals()
    runs: Mapping[str, Totals] = field(default_factory=dict)  # run id -> totals
    tasks: Mapping[tuple[str, str], Totals] = field(default_factory=dict)  # (run id, task id) -> totals

    def run(self, run_id: str) -> Totals:
        return self.runs.get(run_id, Totals())

    def task(self, run_id: str, task_id: str) -> Totals:
        return self.tasks.get((run_id, task_id), Totals())


RUN_TOTALS = query("run_totals")
MISSION_USAGE = query("mission_usage")
RUNS_USAGE = query("runs_usage")


def _totals(row: Mapping[str, Any]) -> Totals:
    return Totals(int(row["tokens_in"]), int(row["tokens_out"]), float(row["cost_usd"]), int(row["attempts"]))


def run_totals(conn: psycopg.Connection[Any], run_id: str) -> Totals:
    row = conn.execute(RUN_TOTALS, {"run_id": run_id}).fetchone()
    return _totals(row) if row is not None else Totals()


def mission_usage(conn: psycopg.Connection[Any], mission_id: str) -> MissionUsage:
    """Totals of a mission over all its runs, and of its latest run and each task in it, in one
    query (a page of runs, or another run, is ``runs_usage``).

    Expects dict rows (the pools of ``workers.store.db`` make them).
    """
    total = Totals()
    runs: dict[str, Totals] = {}
    tasks: dict[tuple[str, str], Totals] = {}
    for row in conn.execute(MISSION_USAGE, {"mission_id": mission_id}).fetchall():
        level = int(row["level"])
        if level == 0:
            tasks[(row["run_id"], row["task_id"])] = _totals(row)
        elif level == 1:
            runs[row["run_id"]] = _totals(row)
        else:
            total = _totals(row)
    return MissionUsage(total, runs, tasks)


def runs_usage(conn: psycopg.Connection[Any], run_ids: list[str]) -> MissionUsage:
    """The totals of ``run_ids`` and of each of their tasks (``total`` is left empty): what a page of
    runs shows, read from those runs' attempts only, however many runs the mission has."""
    runs: dict[str, Totals] = {}
    tasks: dict[tuple[str, str], Totals] = {}
    for row in conn.execute(RUNS_USAGE, {"run_ids": run_ids}).fetchall():
        if int(row["level"]) == 0:
            tasks[(row["run_id"], row["task_id"])] = _totals(row)
        else:
            runs[row["run_id"]] = _totals(row)
    return MissionUsage(Totals(), runs, tasks)
