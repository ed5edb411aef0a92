"""Statements that find one attempt by its key read it through the primary key, whatever the size
of the table when Postgres cached their plan: never the partial indexes of queued or running
attempts, which hold the whole queue (workers/store/attempts.py). The guards are read inside the
statements that lock the run row with them (workers/store/queries/runs.sql)."""

from __future__ import annotations

import re
import uuid
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


# --- history: lists, stream replays and retention read through indexes -----------------------------

# On a history of a few thousand runs (enough for Postgres to prefer an index when one serves, small
# enough to build in a second), each statement a request or a retention batch runs is planned
# generically (as psycopg plans a statement it has prepared) and must read its big tables through
# the index named, never scan one whole, and never sort what the index already orders.
HOT = "msn_plan_hot"
HISTORY_SQL = """
INSERT INTO projects (id, name) VALUES ('prj_plan', 'plan');
INSERT INTO missions (id, project_id, name, status, document, created_at, latest_run_id)
SELECT CASE WHEN n = 0 THEN 'msn_plan_hot' ELSE 'msn_plan_' || n END, 'prj_plan', 'plan-' || n,
       CASE WHEN n % 50 = 0 THEN 'paused' ELSE 'completed' END, '{}', now() - interval '90 days' + n * interval '1 s',
       NULL
  FROM generate_series(0, 999) AS n;
INSERT INTO tasks (id, mission_id, position, title, document)
SELECT m.id || '_t' || k, m.id, k, 't' || k, '{}' FROM missions m, generate_series(1, 2) AS k;
INSERT INTO runs (id, mission_id, number, status, spec, state, finished_at)
SELECT 'run_hot_' || n, 'msn_plan_hot', n, 'completed', '{}', '{}', now() - interval '60 days' + n * interval '10 min'
  FROM generate_series(1, 4000) AS n;
INSERT INTO runs (id, mission_id, number, status, spec, state, finished_at)
SELECT 'run_' || m.id || '_' || k, m.id, k, 'completed', '{}', '{}', now() - (k * interval '1 day')
  FROM missions m, generate_series(1, 3) AS k WHERE m.id <> 'msn_plan_hot';
INSERT INTO attempts (run_id, task_id, attempt, status, prompt, output)
SELECT r.id, 't' || k, 1, 'completed', 'p', 'o' FROM runs r, generate_series(1, 2) AS k;
INSERT INTO run_tasks (run_id, task_id, version, state)
SELECT r.id, 't' || k, 1, jsonb_build_object('status', 'completed') FROM runs r, generate_series(1, 2) AS k;
INSERT INTO events (run_id, mission_id, type, data)
SELECT r.id, r.mission_id, CASE WHEN k = 12 THEN 'mission:done' ELSE 'task:output' END, '{}'
  FROM runs r, generate_series(1, 12) AS k;
INSERT INTO webhooks (id, project_id, url, events, secret)
VALUES ('wh_plan', 'prj_plan', 'https://hooks.example.com/plan', '{mission:done}', 'whsec_plan');
INSERT INTO webhook_deliveries (id, webhook_id, event_id, run_id, mission_id, type, data, status, finished_at)
SELECT 'msg_' || e.id, 'wh_plan', e.id, e.run_id, e.mission_id, e.type, '{}',
       CASE WHEN e.id % 100 = 0 THEN 'pending' ELSE 'delivered' END,
       CASE WHEN e.id % 100 = 0 THEN NULL ELSE now() - interval '60 days' + e.id * interval '1 s' END
  FROM events e WHERE e.type = 'mission:done';
INSERT INTO schedule_fires (mission_id, fire_at, status, run_id)
SELECT 'msn_plan_hot', now() - interval '60 days' + n * interval '10 min', 'started', 'run_hot_' || n
  FROM generate_series(1, 4000) AS n;
ANALYZE;
"""
BIG_TABLES = {"missions", "runs", "events", "attempts", "schedule_fires", "run_tasks", "tasks", "webhook_deliveries"}
CURSOR_TIME = "2026-01-01T00:00:00+00:00"
# The dashboard's list: every extra asked for (the latest run's cost reads its attempts by run).
LIST_EXTRAS = {"name_like": None, "with_cost": True}
HISTORY_PLANS: dict[str, tuple[str, dict[str, Any], set[str]]] = {
    # name: (statement, parameters, indexes it must use)
    "missions, first page": (
        "list_missions",
        {"project_id": "prj_plan", "status": None, "limit": 100, "offset": 0, **LIST_EXTRAS},
        {"missions_project_created"},
    ),
    "missions, first page of a status": (
        "list_missions_with_status",
        {"project_id": "prj_plan", "status": "paused", "limit": 100, "offset": 0, **LIST_EXTRAS},
        {"missions_project_status"},
    ),
    "missions after a cursor": (
        "list_missions_after",
        {"project_id": "prj_plan", "created_at": CURSOR_TIME, "id": "msn_plan_500", "limit": 100, **LIST_EXTRAS},
        {"missions_project_created"},
    ),
    "missions of a status after a cursor": (
        "list_missions_with_status_after",
        {
            "project_id": "prj_plan",
            "status": "completed",
            "created_at": CURSOR_TIME,
            "id": "msn_plan_5",
            "limit": 100,
            **LIST_EXTRAS,
        },
        {"missions_project_status"},
    ),
    "runs after a cursor": (
        "list_runs_after",
        {"mission_id": HOT, "number": 2000, "limit": 50},
        {"runs_mission_number"},
    ),
    "fires after a cursor": (
        "list_fires_after",
        {"mission_id": HOT, "fire_at": CURSOR_TIME, "limit": 50},
        {"schedule_fires_pkey"},
    ),
    "usage of a page of runs": (
        "runs_usage",
        {"run_ids": [f"run_hot_{n}" for n in range(1, 51)]},
        {"attempts_pkey"},
    ),
    "a mission's usage": ("mission_usage", {"mission_id": HOT}, {"attempts_pkey", "missions_pkey"}),
    "a replay's end check": (
        "done_event_at_or_before",
        {"run_id": "run_hot_7", "event_id": 10**9},
        {"events_run_done"},
    ),
    "resumable missions": (
        "list_resumable_missions",
        {"project_id": "prj_plan", "detail": True},
        {"missions_project_status"},
    ),
    "runs whose events to prune": (
        "runs_with_events_to_prune",
        {"before": CURSOR_TIME, "runs": 100},
        {"runs_events_unpruned"},
    ),
    "runs whose outputs to prune": (
        "runs_with_outputs_to_prune",
        {"before": CURSOR_TIME, "runs": 100},
        {"runs_outputs_unpruned"},
    ),
    "runs to delete": ("runs_to_delete", {"before": CURSOR_TIME, "runs": 100}, {"runs_finished"}),
    "a batch of events": (
        "prune_events",
        {"run_ids": ["run_hot_1", "run_hot_2"], "all": False, "limit": 1000},
        {"events_run_id"},
    ),
    "a batch of finished webhook deliveries": (
        "prune_deliveries",
        {"before": CURSOR_TIME, "limit": 1000},
        {"webhook_deliveries_finished"},
    ),
    "a batch of outputs": (
        "prune_outputs",
        {"run_ids": ["run_hot_1", "run_hot_2"], "limit": 1000},
        {"attempts_pkey"},
    ),
}


@pytest.fixture(scope="module")
def history_url(postgres_server_url: str, template_database: str) -> Iterator[str]:
    """One database with the history above, shared by the plan tests of this module (read only)."""
    from tests.conftest import with_database

    name = f"missions_plans_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(
            pgsql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                pgsql.Identifier(name), pgsql.Identifier(template_database)
            )
        )
    url = with_database(postgres_server_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(HISTORY_SQL)  # type: ignore[arg-type]  # (a constant: several statements, no parameters)
    yield url
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name)))


def _nodes(plan: Any) -> Iterator[dict[str, Any]]:
    if isinstance(plan, dict):
        if "Node Type" in plan:
            yield plan
        for value in plan.values():
            yield from _nodes(value)
    elif isinstance(plan, list):
        for item in plan:
            yield from _nodes(item)


def generic_plan(conn: psycopg.Connection, text: str, params: dict[str, Any]) -> Any:
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    conn.execute("DEALLOCATE ALL")
    conn.execute("PREPARE probe AS " + PLACEHOLDER.sub(number, text))  # type: ignore[operator]
    conn.execute("SET plan_cache_mode = force_generic_plan")
    values = pgsql.SQL(", ").join(pgsql.Literal(params[n]) for n in names).as_string(conn)
    row = conn.execute(f"EXPLAIN (FORMAT JSON) EXECUTE probe({values})").fetchone()  # type: ignore[arg-type]
    conn.rollback()  # (nothing is executed; FOR UPDATE takes no lock under plain EXPLAIN)
    assert row is not None
    return row["QUERY PLAN"]


@pytest.mark.parametrize("case", sorted(HISTORY_PLANS))
def test_a_history_statement_reads_through_its_index_whatever_the_history(history_url: str, case: str) -> None:
    name, params, indexes = HISTORY_PLANS[case]
    with psycopg.connect(history_url, row_factory=psycopg.rows.dict_row) as conn:
        nodes = list(_nodes(generic_plan(conn, query(name), params)))

    scanned = {n["Relation Name"] for n in nodes if n["Node Type"] == "Seq Scan"} & BIG_TABLES
    assert not scanned, f"{name} scans {scanned} whole: {nodes}"
    used = {n["Index Name"] for n in nodes if "Index Name" in n}
    assert indexes <= used, f"{name} uses {used}, not {indexes}"
    if name.endswith("_after"):  # a keyset page: read in the index's order, no sort of the range
        assert not [n for n in nodes if n["Node Type"] in ("Sort", "Incremental Sort")], nodes
