#!/usr/bin/env python
"""Do request costs stay flat as history grows? The same requests on a small database and on one
holding 100,000 finished runs, 1,000,000 attempts and 10,000,000 events, side by side.

    python bench/history.py [--runs 100000] [--attempts 10] [--events 100] [--samples 40] [--rounds 3]
                            [--retention]

It creates two databases on ``DATABASE_URL``, ``bench17_small_<random>`` and
``bench17_filled_<random>`` (both dropped at the end), migrates both and fills them with the same
generator (``fill``): one project whose missions have finished runs, each run with its task rows,
``--attempts`` attempts (prompt and output of a few hundred characters) and ``--events`` events
(the last ``mission:done``); one "hot" mission holds a tenth of the runs and a schedule fire for
each (a mission that fires every few minutes for a month), the others ten runs each. The small
database gets just enough for every page measured to be full (100 missions, a hot mission with 100
runs); the filled one ``--runs`` runs. Rows go in with COPY (psycopg's ``cursor.copy``), foreign
keys unchecked while loading (``session_replication_role = replica``), then ``VACUUM ANALYZE``.

Then one ``missions api`` per database (``REDIS_URL``, default redis://127.0.0.1:6379/10,
**flushed**), no worker, and for ``--rounds`` rounds, alternating which database goes first, each
request ``--samples`` times (wall time at the client, keep-alive connection):

- ``POST /execute`` of a one-task mission (then aborted, untimed, so it can run again), and the
  abort itself as "a coordinator step" (``runs.abort`` in this process: lock, decide, write, events);
- ``GET /missions`` (limit 100): the first page; on the filled database also a deep page
  (offset 9,000, and the same page through ``after``);
- ``GET /runs`` of the hot mission (limit 50): first page; deep page at offset 5,000 and by ``after``;
- an SSE replay of a finished run after ``Last-Event-ID`` (its second half, until ``mission:done``);
- ``GET /missions/resumable`` and a ``GET /metrics`` scrape.

Printed: the median and p95 of each, per database, the ratio of the medians (target ≤ 1.3), and with
``--explain`` the plans of the list statements on the filled database. ``--retention`` then turns
on retention (events of runs finished over 30 days ago) on the filled database, one tick a second
with each budget of ``--retention-seconds``, and measures how fast its batches delete and what
``POST /execute`` costs with and without it (alternating windows).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from overhead import DEFAULT_DATABASE_URL, independent_doc, pct  # noqa: E402
from sse_streams import create_database, drop_database  # noqa: E402
from streams import Api  # noqa: E402

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/10"
NOW = datetime.now(UTC)
PROMPT = "Review the change set and list every risk you find, most severe first. " * 3
OUTPUT = "The change set touches the billing path; the risks are listed below in order. " * 4


# --- the generator -------------------------------------------------------------------------------


def _copy(conn: psycopg.Connection[Any], table: str, columns: str, lines: Iterator[str]) -> None:
    """COPY ``table (columns)`` FROM ``lines`` (text format: tab-separated, one row a line), sent in
    chunks of about 8 MB so that memory stays flat."""
    statement = f"COPY {table} ({columns}) FROM STDIN"
    with conn.cursor().copy(statement) as copy:  # type: ignore[arg-type]  # (bench: names written above)
        chunk: list[str] = []
        size = 0
        for line in lines:
            chunk.append(line)
            size += len(line)
            if size > 8 << 20:
                copy.write("".join(chunk))
                chunk, size = [], 0
        if chunk:
            copy.write("".join(chunk))


def fill(db_url: str, project_id: str, runs: int, attempts: int, events: int, missions_min: int) -> dict[str, Any]:
    """Fill the project with finished history (see the module docstring); what it made."""
    hot_runs = max(100, runs // 10)
    per_mission = 10
    other = max(missions_min - 1, (runs - hot_runs) // per_mission)
    plan: list[tuple[str, int]] = [("msn_hist_hot", hot_runs)] + [
        (f"msn_hist_{n:06d}", per_mission) for n in range(other)
    ]
    tasks = [f"task_h{t}" for t in range(attempts)]
    document = json.dumps({"prompt": "history", "qualityThreshold": 4.0, "team": {"name": "crew", "agents": []}})
    state = json.dumps({"status": "completed"})
    task_state = {t: json.dumps({"taskId": t, "status": "completed", "attempt": 1, "score": 4.5}) for t in tasks}
    spec = json.dumps({"name": "history", "tasks": [{"id": t, "title": t} for t in tasks]})
    started = time.monotonic()
    span = timedelta(days=60).total_seconds()
    event_id = 0
    with psycopg.connect(db_url) as conn:
        conn.execute("SET session_replication_role = replica")  # no FK triggers while loading

        def mission_rows() -> Iterator[str]:
            for n, (mission_id, count) in enumerate(plan):
                created = (NOW - timedelta(days=90) + timedelta(seconds=n)).isoformat()
                yield (
                    f"{mission_id}\t{project_id}\thistory-{n}\tcompleted\t{document}\t{count}\t"
                    f"run_{mission_id}_{count}\t{created}\t{created}\n"
                )

        _copy(
            conn,
            "missions",
            "id, project_id, name, status, document, execution_count, latest_run_id, created_at, updated_at",
            mission_rows(),
        )

        def task_rows() -> Iterator[str]:
            for mission_id, _ in plan:
                for position, task in enumerate(tasks):
                    yield (f"{task}_{mission_id}\t{mission_id}\t{position}\t{task}\t{{}}\n")

        _copy(conn, "tasks", "id, mission_id, position, title, document", task_rows())

        def finished(n: int, count: int) -> str:
            return (NOW - timedelta(seconds=span * (count - n) / count)).isoformat()

        def run_rows() -> Iterator[str]:
            for mission_id, count in plan:
                for n in range(1, count + 1):
                    at = finished(n, count)
                    yield (
                        f"run_{mission_id}_{n}\t{mission_id}\t{n}\tcompleted\t{spec}\t{state}\t{n}\t{at}\t{at}\t{at}\n"
                    )

        _copy(
            conn,
            "runs",
            "id, mission_id, number, status, spec, state, version, created_at, started_at, finished_at",
            run_rows(),
        )

        def run_task_rows() -> Iterator[str]:
            for mission_id, count in plan:
                for n in range(1, count + 1):
                    for task in tasks:
                        yield (f"run_{mission_id}_{n}\t{task}\t1\t{task_state[task]}\n")

        _copy(conn, "run_tasks", "run_id, task_id, version, state", run_task_rows())

        def attempt_rows() -> Iterator[str]:
            for mission_id, count in plan:
                for n in range(1, count + 1):
                    at = finished(n, count)
                    for task in tasks:
                        yield (
                            f"run_{mission_id}_{n}\t{task}\t1\tcompleted\tnoop\tscripted/noop\tw1\t{PROMPT}\t{OUTPUT}\t"
                            f"4.5\t120\t80\t0.0012\t{at}\t{at}\t{at}\t{at}\t{at}\n"
                        )

        _copy(
            conn,
            "attempts",
            "run_id, task_id, attempt, status, agent, model, worker, prompt, output, score, "
            "tokens_in, tokens_out, cost_usd, created_at, sent_at, claimed_at, heartbeat_at, finished_at",
            attempt_rows(),
        )

        def event_rows() -> Iterator[str]:
            nonlocal event_id
            for mission_id, count in plan:
                for n in range(1, count + 1):
                    run_id, at = f"run_{mission_id}_{n}", finished(n, count)
                    for k in range(events):
                        event_id += 1
                        kind = "mission:done" if k == events - 1 else ("task:output" if k % 3 else "task:status")
                        data = (
                            f'{{"missionId": "{mission_id}", "runId": "{run_id}", "taskId": "{tasks[k % attempts]}", '
                            f'"chunk": "part {k} of the output of the task"}}'
                        )
                        yield (f"{event_id}\t{run_id}\t{mission_id}\t{kind}\t{data}\t{at}\n")

        _copy(conn, "events", "id, run_id, mission_id, type, data, created_at", event_rows())
        conn.execute("SELECT setval('events_id_seq', %s)", (event_id,))

        def fire_rows() -> Iterator[str]:
            mission_id, count = plan[0]
            for n in range(1, count + 1):
                yield (f"{mission_id}\t{finished(n, count)}\tstarted\trun_{mission_id}_{n}\n")

        _copy(conn, "schedule_fires", "mission_id, fire_at, status, run_id", fire_rows())
        conn.commit()
    loaded = time.monotonic() - started
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return {
        "missions": len(plan),
        "runs": sum(count for _, count in plan),
        "attempts": sum(count for _, count in plan) * attempts,
        "events": event_id,
        "load_seconds": loaded,
        "total_seconds": time.monotonic() - started,
        "hot": plan[0][0],
        "hot_runs": hot_runs,
        "replay_run": f"run_{plan[1][0]}_5",
    }


# --- the measurements ----------------------------------------------------------------------------


class Target:
    """One database with its API and what the requests need there."""

    def __init__(self, label: str, admin_url: str, redis_url: str, logs: Path) -> None:
        self.label = label
        self.name, self.url = create_database(admin_url, f"bench17_{label}_")
        self.redis_url = redis_url
        self.logs = logs
        self.api: Api | None = None
        self.info: dict[str, Any] = {}
        self.key = ""
        self.project_id = ""
        self.missions: list[str] = []
        self.cursors: dict[str, str] = {}
        self.deep: dict[str, int] = {}
        self.replay: tuple[str, str, int] = ("", "", 0)

    def prepare(self, runs: int, attempts: int, events: int) -> None:
        from workers.store.db import upgrade
        from workers.store.projects import create_key

        upgrade(self.url)
        with psycopg.connect(self.url, row_factory=dict_row) as conn:
            self.key = create_key(conn, "history")
            self.project_id = conn.execute("SELECT project_id FROM api_keys").fetchone()["project_id"]  # type: ignore[index]
        self.info = fill(self.url, self.project_id, runs, attempts, events, missions_min=101)
        self.api = Api(ROOT, self.url, self.redis_url, self.logs)
        for n in range(4):  # executed and aborted in turn
            made = self.call("POST", "/v1/missions", independent_doc(f"measured-{n}", 1))
            self.missions.append(made["id"])
        with psycopg.connect(self.url) as conn:
            row = conn.execute(
                "SELECT mission_id, id FROM events WHERE run_id = %s ORDER BY id OFFSET %s LIMIT 1",
                (self.info["replay_run"], events // 2),
            ).fetchone()
        assert row is not None
        self.replay = (row[0], self.info["replay_run"], row[1])

    def call(self, method: str, path: str, body: Any = None) -> Any:
        assert self.api is not None
        return self.api.call(method, path, self.key, body)

    def get(self, path: str, key: bool = True) -> http.client.HTTPResponse:
        assert self.api is not None
        headers = {"Authorization": f"Bearer {self.key}"} if key else {}
        response, _ = self.api.request("GET", path, headers)
        if response.status != 200:
            raise SystemExit(f"GET {path}: {response.status}")
        return response

    def cursor_at(self, path: str, offset: int, limit: int) -> str:
        """The cursor of the page that starts at ``offset``, from the page before it."""
        response = self.get(f"{path}?limit={limit}&offset={offset - limit}")
        cursor = response.getheader("X-Next-Cursor")
        assert cursor, path
        return cursor

    def replay_once(self) -> None:
        assert self.api is not None
        mission_id, run_id, after = self.replay
        conn = http.client.HTTPConnection("127.0.0.1", self.api.port, timeout=30)
        conn.request(
            "GET",
            f"/v1/missions/{mission_id}/events?runId={run_id}",
            headers={"Authorization": f"Bearer {self.key}", "Accept": "text/event-stream", "Last-Event-ID": str(after)},
        )
        response = conn.getresponse()
        body = response.read()  # the run is over: the stream ends after mission:done
        conn.close()
        assert b"mission:done" in body

    def stop(self) -> None:
        if self.api is not None:
            self.api.stop()


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def execute_and_step(target: Target, samples: int) -> tuple[list[float], list[float]]:
    from workers.coordination import runs
    from workers.support.clock import utcnow

    services = target_services(target)
    executes, steps = [], []
    for n in range(samples):
        mission_id = target.missions[n % len(target.missions)]
        executes.append(timed(lambda m=mission_id: target.call("POST", f"/v1/missions/{m}/execute")))

        def abort(m: str = mission_id) -> None:
            with services.coordinator.transaction() as uow:
                runs.abort(uow, target.project_id, m, utcnow())

        steps.append(timed(abort))
    return executes, steps


_SERVICES: dict[str, Any] = {}


def target_services(target: Target) -> Any:
    from config import Settings
    from workers.wiring import Services

    if target.name not in _SERVICES:
        _SERVICES[target.name] = Services(Settings(database_url=target.url, redis_url=target.redis_url))
    return _SERVICES[target.name]


DEEP_MISSIONS_OFFSET = "GET /missions, deep page by offset"
DEEP_MISSIONS_AFTER = "GET /missions, same page by after"
DEEP_RUNS_OFFSET = "GET /runs, deep page by offset"
DEEP_RUNS_AFTER = "GET /runs, same page by after"


def measure(target: Target, samples: int) -> dict[str, list[float]]:
    hot = f"/v1/missions/{target.info['hot']}/runs"
    out: dict[str, list[float]] = {}
    out["POST /execute"], out["coordinator step (abort)"] = execute_and_step(target, samples)
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("GET /missions, first page", lambda: target.get("/v1/missions?limit=100")),
        ("GET /runs, first page", lambda: target.get(f"{hot}?limit=50")),
        ("SSE replay after Last-Event-ID", target.replay_once),
        ("GET /missions/resumable", lambda: target.get("/v1/missions/resumable")),
        ("GET /metrics", lambda: target.get("/metrics", key=False)),
    ]
    if target.cursors:
        missions_page = f"/v1/missions?limit=100&offset={target.deep['missions']}"
        runs_page = f"{hot}?limit=50&offset={target.deep['runs']}"
        cases += [
            (DEEP_MISSIONS_OFFSET, lambda: target.get(missions_page)),
            (DEEP_MISSIONS_AFTER, lambda: target.get(f"/v1/missions?limit=100&after={target.cursors['missions']}")),
            (DEEP_RUNS_OFFSET, lambda: target.get(runs_page)),
            (DEEP_RUNS_AFTER, lambda: target.get(f"{hot}?limit=50&after={target.cursors['runs']}")),
        ]
    for label, action in cases:
        action()  # warm: the first request of a kind prepares its statements
        out[label] = [timed(action) for _ in range(samples)]
    return out


EXPLAINED = {
    "list_missions_after": {"created_at": NOW - timedelta(days=89), "id": "msn_hist_009000", "limit": 100},
    "list_runs_after": {"mission_id": "msn_hist_hot", "number": 5000, "limit": 50},
    "list_runs": {"mission_id": "msn_hist_hot", "limit": 50, "offset": 0},
    "list_missions": {"limit": 100, "offset": 0},
    "list_fires_after": {"mission_id": "msn_hist_hot", "fire_at": NOW - timedelta(days=30), "limit": 50},
    "runs_usage": {"run_ids": [f"run_msn_hist_hot_{n}" for n in range(1, 51)]},
    "fetch_events": {"run_id": "run_msn_hist_000000_5", "after_id": 0, "limit": 500},
    "done_event_at_or_before": {"run_id": "run_msn_hist_000000_5", "event_id": 10**12},
    "list_resumable_missions": {},
    "runs_with_events_to_prune": {"before": NOW - timedelta(days=30), "runs": 100},
    "runs_to_delete": {"before": NOW - timedelta(days=30), "runs": 100},
}


def explain(target: Target) -> None:
    from workers.store.queries import query

    with psycopg.connect(target.url, row_factory=dict_row) as conn:
        params_common = {"project_id": target.project_id, "status": None}
        for name, params in EXPLAINED.items():
            rows = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query(name),  # type: ignore[operator]
                {**params_common, **params},
            ).fetchone()
            conn.rollback()  # (EXPLAIN ANALYZE of a FOR UPDATE takes the locks)
            plan = rows["QUERY PLAN"][0]  # type: ignore[index]
            top = plan["Plan"]
            print(
                f"  {name:28} {plan['Execution Time']:8.2f} ms, shared buffers {top.get('Shared Hit Blocks', 0)} hit "
                f"+ {top.get('Shared Read Blocks', 0)} read; {_nodes(top)}"
            )


def _nodes(plan: dict[str, Any]) -> str:
    names = []
    stack = [plan]
    while stack:
        node = stack.pop()
        label = node["Node Type"] + (f" on {node['Index Name']}" if "Index Name" in node else "")
        if node["Node Type"] == "Seq Scan":
            label += f" on {node['Relation Name']}"
        names.append(label)
        stack.extend(reversed(node.get("Plans", [])))
    return " > ".join(names)


def retention_run(target: Target, samples: int, seconds: list[float], rounds: int) -> None:
    """Retention of events older than 30 days on the filled database, one tick a second as beat
    runs it, for each time budget in ``seconds``; ``POST /execute`` timed in windows with and
    without it, alternating, ``rounds`` times."""
    for budget in seconds:
        _retention_with(target, samples, budget, rounds)


def _retention_with(target: Target, samples: int, budget: float, rounds: int) -> None:
    from workers.store import retention

    services = target_services(target)
    policy = retention.Policy(events=timedelta(days=30), seconds=budget)
    stop = threading.Event()
    totals = retention.Pruned()
    busy_time = 0.0

    def prune_loop() -> None:
        nonlocal busy_time
        while not stop.is_set():
            started = time.monotonic()
            pruned = retention.prune(services.db, policy, datetime.now(UTC))
            totals.events += pruned.events
            totals.batches += pruned.batches
            busy_time += time.monotonic() - started
            stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))  # one tick a second

    quiet: list[float] = []
    busy: list[float] = []
    for _ in range(rounds):
        quiet += execute_and_step(target, samples)[0]
        stop.clear()
        thread = threading.Thread(target=prune_loop, daemon=True)
        thread.start()
        busy += execute_and_step(target, samples)[0]
        stop.set()
        thread.join()
    print(
        f"  {budget:g} s per tick: {totals.events:,} events deleted in {totals.batches} batches, "
        f"{totals.events / max(busy_time, 1e-9):,.0f} events per second of pruning; POST /execute without / with "
        f"it: median {statistics.median(quiet) * 1e3:.2f} / {statistics.median(busy) * 1e3:.2f} ms, "
        f"p95 {pct(quiet, 95) * 1e3:.2f} / {pct(busy, 95) * 1e3:.2f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000, help="finished runs in the filled database")
    parser.add_argument("--attempts", type=int, default=10, help="attempts (and tasks) per run")
    parser.add_argument("--events", type=int, default=100, help="events per run")
    parser.add_argument("--samples", type=int, default=40, help="requests of each kind per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--explain", action="store_true", help="print the plans of the list statements")
    parser.add_argument("--retention", action="store_true", help="then measure retention on the filled database")
    parser.add_argument(
        "--retention-seconds",
        default="0.2,0.1",
        help="time budgets per tick to measure retention with (default 0.2,0.1)",
    )
    args = parser.parse_args()
    admin_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    rds = redis.Redis.from_url(redis_url)
    rds.flushdb()
    logs = Path(tempfile.mkdtemp(prefix="bench-history-"))
    targets: list[Target] = []
    try:
        small = Target("small", admin_url, redis_url, logs)
        targets.append(small)
        filled = Target("filled", admin_url, redis_url, logs)
        targets.append(filled)
        small.prepare(200, args.attempts, args.events)
        filled.prepare(args.runs, args.attempts, args.events)
        for target in (small, filled):
            i = target.info
            print(
                f"{target.label}: {i['missions']:,} missions, {i['runs']:,} runs, {i['attempts']:,} attempts, "
                f"{i['events']:,} events; COPY {i['load_seconds']:.1f} s, with VACUUM ANALYZE {i['total_seconds']:.1f} s"
            )
        filled.deep = {
            "missions": max(100, (filled.info["missions"] - 200) // 100 * 100),
            "runs": filled.info["hot_runs"] // 2,
        }
        filled.cursors = {
            "missions": filled.cursor_at("/v1/missions", filled.deep["missions"], 100),
            "runs": filled.cursor_at(f"/v1/missions/{filled.info['hot']}/runs", filled.deep["runs"], 50),
        }
        print(
            f"deep pages: missions at offset {filled.deep['missions']:,}, hot mission's runs at {filled.deep['runs']:,}"
        )
        results: dict[str, dict[str, list[float]]] = {"small": {}, "filled": {}}
        for round_ in range(args.rounds):
            order = (small, filled) if round_ % 2 == 0 else (filled, small)
            for target in order:
                for label, values in measure(target, args.samples).items():
                    results[target.label].setdefault(label, []).extend(values)
            print(f"round {round_ + 1} done", flush=True)
        base = {
            DEEP_MISSIONS_OFFSET: "GET /missions, first page",
            DEEP_MISSIONS_AFTER: "GET /missions, first page",
            DEEP_RUNS_OFFSET: "GET /runs, first page",
            DEEP_RUNS_AFTER: "GET /runs, first page",
        }
        print(f"\n{'request':36} {'small: median / p95 ms':>24} {'filled: median / p95 ms':>25} {'ratio':>7}")
        for label, values in results["filled"].items():
            reference = results["small"][base.get(label, label)]
            ratio = statistics.median(values) / statistics.median(reference)
            print(
                f"{label:36} {statistics.median(reference) * 1e3:10.2f} / {pct(reference, 95) * 1e3:7.2f}"
                f"{'*' if label in base else ' '}     {statistics.median(values) * 1e3:10.2f} / "
                f"{pct(values, 95) * 1e3:7.2f}   {ratio:6.2f}{'' if ratio <= 1.3 else '  over 1.3'}"
            )
        print("(* the small database's first page: it has no deep page)")
        if args.explain:
            print("\nplans on the filled database (EXPLAIN ANALYZE):")
            explain(filled)
        if args.retention:
            print("\nretention on the filled database:")
            budgets = [float(value) for value in args.retention_seconds.split(",")]
            retention_run(filled, args.samples, budgets, args.rounds)
    finally:
        for services in _SERVICES.values():
            services.close()
        for target in targets:
            target.stop()
        for target in targets:
            drop_database(admin_url, target.name)
        rds.flushdb()
    return 0


if __name__ == "__main__":
    random.seed(17)
    sys.exit(main())
