#!/usr/bin/env python
"""What the webhook outbox adds to the statement of a coordinator step, measured in Postgres alone.

    python bench/outbox_cost.py              # 3 rounds of 1,000 executions of each variant
    python bench/outbox_cost.py --n 5000 --rounds 5

Every coordinator step writes its events with one of the statements of
``workers/store/queries/runs.sql``; each has an ``outbox`` part that inserts a delivery per event an
enabled webhook of the run's project wants. This times ``save_step`` (the locking step's write) with
two events, each execution in its own transaction rolled back (so the commit's flush, which is the
same for all variants and dominates on a busy disk, is left out), the variants interleaved
execution by execution. Each execution runs under ``EXPLAIN (ANALYZE, TIMING OFF)``, and Postgres's
own planning and execution times are what is compared: on a machine shared with other work those
move much less than the time the client waits.

- ``no outbox``: the statement with its outbox part cut out (the code before webhooks);
- ``outbox, no webhooks``: the statement as it runs, for a project without webhooks;
- ``outbox, 1 webhook``: the same for a project whose webhook wants one of the two events (one
  delivery row is written).

It creates a fresh database ``bench_<random>`` on DATABASE_URL's server (default the local one),
applies the migrations, and drops it at the end. Printed: per round, the median execution
time of each variant; then the medians of the rounds (planning, execution) and their
differences to ``no outbox``. (Planning is paid on every execution here; the product's connections
prepare the statement after five uses, so that it is mostly planned once per connection.)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from overhead import with_path  # noqa: E402 - (bench/ is on the path when run as a script)

from workers.store.db import upgrade  # noqa: E402
from workers.store.queries import query  # noqa: E402

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def without_outbox(statement: str) -> str:
    """``save_step`` as it was before webhooks: no outbox part, no deliveries column."""
    cut = re.sub(r"\), outbox AS \(.*?RETURNING id\n\)\n", ")\n", statement, flags=re.DOTALL)
    cut = cut.replace("RETURNING id, type, data", "RETURNING id")
    cut = cut.replace(", (SELECT array_agg(id) FROM outbox) AS deliveries", "")
    if "outbox" in cut:
        raise SystemExit("could not cut the outbox part out of save_step; update bench/outbox_cost.py")
    return cut


def setup(conn: psycopg.Connection[Any]) -> dict[str, str]:
    ids = {"bare": "msn_bench_bare", "hooked": "msn_bench_hooked"}
    for name, mission_id in ids.items():
        project = f"prj_bench_{name}"
        conn.execute("INSERT INTO projects (id, name) VALUES (%s, %s)", (project, project))
        conn.execute(
            "INSERT INTO missions (id, project_id, name, status, document) VALUES (%s, %s, %s, 'active', '{}')",
            (mission_id, project, name),
        )
        conn.execute(
            "INSERT INTO runs (id, mission_id, number, status, spec, state) VALUES (%s, %s, 1, 'active', '{}', '{}')",
            (f"run_{name}", mission_id),
        )
    conn.execute(
        "INSERT INTO webhooks (id, project_id, url, events, secret) VALUES "
        "('wh_bench', 'prj_bench_hooked', 'http://127.0.0.1:9/', ARRAY['mission:done'], 'whsec_x')"
    )
    return ids


def params(mission_id: str, run_id: str) -> dict[str, Any]:
    events = [
        {"type": "task:status", "data": {"missionId": mission_id, "runId": run_id, "status": "completed"}},
        {"type": "mission:done", "data": {"missionId": mission_id, "runId": run_id, "status": "completed"}},
    ]
    return {
        "run_id": run_id,
        "mission_id": mission_id,
        "tasks": Jsonb([{"id": "task_1", "state": {"taskId": "task_1", "status": "completed"}}]),
        "state": Jsonb({"status": "completed"}),
        "status": "completed",
        "pause_reason": None,
        "pause_message": None,
        "failure_reason": None,
        "version": 1,
        "token": "t",
        "terminal": True,
        "now": None,
        "attempts": Jsonb([]),
        "events": Jsonb(events),
    }


def once(conn: psycopg.Connection[Any], statement: str, values: dict[str, Any]) -> tuple[float, float, float]:
    """One execution in a transaction that is rolled back: the seconds the client waited for it
    (BEGIN and ROLLBACK excluded), and Postgres's own planning and execution times (EXPLAIN
    ANALYZE without per-node timing), which the load of other processes on the machine disturbs less.
    (The client's time includes transferring and parsing EXPLAIN's output, larger for a longer
    statement, so only Postgres's times are compared.)"""
    with conn.transaction(force_rollback=True):
        started = time.perf_counter()
        row = conn.execute("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + statement, values).fetchone()
        waited = time.perf_counter() - started
    assert row is not None
    found = row["QUERY PLAN"]
    plan = (found if isinstance(found, list) else json.loads(found))[0]
    return waited, plan["Planning Time"] / 1000, plan["Execution Time"] / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="executions of each variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    admin_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_path(admin_url, f"/{name}")
    try:
        upgrade(url)
        with psycopg.connect(url, row_factory=dict_row, autocommit=True) as conn:
            ids = setup(conn)
            from datetime import UTC, datetime

            now = datetime.now(UTC)
            with_outbox = query("save_step")
            variants = {
                "no outbox": (without_outbox(with_outbox), ids["bare"], "run_bare"),
                "outbox, no webhooks": (with_outbox, ids["bare"], "run_bare"),
                "outbox, 1 webhook": (with_outbox, ids["hooked"], "run_hooked"),
            }
            print(f"save_step with 2 events, median of {args.n} executions per variant and round (rolled back)")
            prepared = {
                label: (statement, {**params(mission_id, run_id), "now": now})
                for label, (statement, mission_id, run_id) in variants.items()
            }
            for statement, values in prepared.values():
                for _ in range(50):  # warm: plans prepared, caches filled
                    once(conn, statement, values)
            kinds = ("client", "planning", "execution")  # (client: not printed, it includes EXPLAIN's output)
            results: dict[str, dict[str, list[float]]] = {k: {kind: [] for kind in kinds} for k in variants}
            for round_ in range(1, args.rounds + 1):
                samples: dict[str, list[tuple[float, float, float]]] = {k: [] for k in variants}
                for _ in range(args.n):  # interleaved, so that the machine's load drifts the same for all
                    for label, (statement, values) in prepared.items():
                        samples[label].append(once(conn, statement, values))
                line = []
                for label, got in samples.items():
                    for i, kind in enumerate(kinds):
                        results[label][kind].append(statistics.median(s[i] for s in got))
                    line.append(f"{label} {results[label]['execution'][-1] * 1e6:6.1f} µs")
                print(f"  round {round_}, Postgres execution: " + " | ".join(line))
            print("  medians of the rounds:        planning       execution")
            base = {kind: statistics.median(results["no outbox"][kind]) for kind in kinds}
            for label, by_kind in results.items():
                cells = []
                for kind in kinds[1:]:
                    med = statistics.median(by_kind[kind])
                    cells.append(f"{med * 1e6:6.1f} ({(med - base[kind]) * 1e6:+5.1f})")
                print(f"  {label:22} " + "  ".join(cells) + "  µs (vs no outbox)")
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
