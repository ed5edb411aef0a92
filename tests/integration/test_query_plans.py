"""Statements that find one attempt by its key read it through the primary key, whatever the size
of the table when Postgres cached their plan: never the partial indexes of queued or running
attempts, which hold the whole queue (workers/store/attempts.py). The guards are read inside the
statements that lock the run row with them (workers/store/queries/runs.sql)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql
from psycopg.types.json import Jsonb

from workers.store import attempts
from workers.store.queries import query

PLACEHOLDER = re.compile(r"%\((\w+)\)s")
KEY = {"run_id": "run_x", "task_id": "task_x", "attempt": 1, "now": None}
POINT_LOOKUPS = {
    "claim": (attempts.CLAIM, {**KEY, "worker": "w", "was": "queued"}),
    "record": (
        query("lock_run_recording_result"),
        {
            **KEY,
            "attempt_status": "completed",
            "output": "",
            "error": None,
            "tokens_in": 0,
            "tokens_out": 0,
            "cost": 0,
            "outcomes": Jsonb([]),
            "was": "running",
        },
    ),
    "record score": (
        query("lock_run_recording_score"),
        {
            **KEY,
            "attempt_status": "completed",
            "score": 5,
            "assessment": Jsonb({}),
            "judge_model": None,
            "judge_tokens_in": 0,
            "judge_tokens_out": 0,
            "judge_cost": 0,
            "was": "assessing",
        },
    ),
    "drop assessment": (attempts.DROP_ASSESSMENT, {**KEY, "was": "assessing"}),
    "mark lost": (query("lock_run_marking_lost"), {**KEY, "was": "running"}),
    "cancel": (attempts.CANCEL, {**KEY, "reason": "r", "live": ["queued", "running"]}),
    "to assess": (attempts.TO_ASSESS, {**KEY, "was": "assessing"}),
}


def _indexes(plan: Any) -> Iterator[str]:
    if isinstance(plan, dict):
        if "Index Name" in plan:
            yield plan["Index Name"]
        for value in plan.values():
            yield from _indexes(value)
    elif isinstance(plan, list):
        for item in plan:
            yield from _indexes(item)


@pytest.mark.parametrize("name", sorted(POINT_LOOKUPS))
def test_a_point_lookup_of_an_attempt_uses_the_primary_key_in_a_cached_plan(db: psycopg.Connection, name: str) -> None:
    text, params = POINT_LOOKUPS[name]
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    # Prepared the way psycopg prepares a statement it runs often; the plan it keeps is generic.
    db.execute("PREPARE probe AS " + PLACEHOLDER.sub(number, text))
    db.execute("SET plan_cache_mode = force_generic_plan")
    values = pgsql.SQL(", ").join(pgsql.Literal(params[n]) for n in names).as_string(db)
    row = db.execute(f"EXPLAIN (FORMAT JSON) EXECUTE probe({values})").fetchone()
    assert row is not None
    assert {i for i in _indexes(row["QUERY PLAN"]) if i.startswith("attempts")} == {"attempts_pkey"}


def test_the_queue_figures_of_a_scrape_read_only_the_queued_attempts_however_long_the_history(
    db: psycopg.Connection,
) -> None:
    db.execute("INSERT INTO projects (id, name) VALUES ('prj_plan', 'plan')")
    db.execute(
        "INSERT INTO missions (id, project_id, name, status, document) "
        "VALUES ('msn_plan', 'prj_plan', 'p', 'active', '{}')"
    )
    db.execute(
        "INSERT INTO runs (id, mission_id, number, status, spec, state) "
        "VALUES ('run_plan', 'msn_plan', 1, 'active', '{}', '{}')"
    )
    # A long history of finished attempts and a short queue.
    db.execute(
        "INSERT INTO attempts (run_id, task_id, attempt, status) "
        "SELECT 'run_plan', 'task_' || n, 1, CASE WHEN n % 5000 = 0 THEN 'queued' ELSE 'completed' END "
        "FROM generate_series(1, 50000) AS n"
    )
    db.execute("ANALYZE attempts")
    row = db.execute("EXPLAIN (FORMAT JSON) " + query("queued_attempts")).fetchone()
    assert row is not None
    plan = row["QUERY PLAN"]
    assert set(_indexes(plan)) == {"attempts_queued"}
    assert "Seq Scan" not in str(plan)
    figures = db.execute(query("queued_attempts")).fetchone()
    assert figures is not None and figures["n"] == 10
