#!/usr/bin/env python
"""Where the time of one Missions hop goes: the worker code path, in-process, with timers.

    python bench/profile_hop.py                  # chain of 40, fan-out 10 / 200 / 2000 (sampled)
    python bench/profile_hop.py --cprofile DIR   # also write cProfile dumps there and print top functions

No Celery here: a single thread plays a ``--pool solo`` worker. It creates a fresh database
``bench_<random>`` (dropped at the end), creates missions through the real Flask app (test client),
starts runs with ``workers.coordination.runs.execute`` in a unit of work of a ``Coordinator``
(``workers.coordination.advance``) and then runs ``Executor.run_attempt``
(``workers.execution.executor``) for every attempt the coordinator asks for, in FIFO order. The
coordinator's sender is the real ``Dispatcher.send`` (``workers.messaging.dispatch``), timed, with
the Celery sends replaced by an in-process queue (wake-ups are still published to Redis). The
product code is not modified: functions are wrapped at run time with ``time.perf_counter`` timers,
and every SQL statement is timed by wrapping ``psycopg.Cursor.execute``/``executemany``.

Printed per attempt (mean): transactions, SQL statements (by their name in
``workers/store/queries/*.sql``, else by kind), time in the two write paths of ``advance()``
(``step_if_current``, ``step``) and their parts, RunState.from_json /
to_json / MissionSpec.from_document / engine.decide / JSON encode and decode, and the size of the
``runs.state`` document; then a micro-benchmark of the state (de)serialisation by task count.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import functools
import io
import itertools
import json
import os
import pstats
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from overhead import (  # noqa: E402 (bench/ is put on sys.path above)
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    chain_doc,
    fan_doc,
    with_path,
)

# -- timers ----------------------------------------------------------------------------------------
TIMES: dict[str, float] = collections.defaultdict(float)
COUNTS: dict[str, int] = collections.defaultdict(int)


def reset() -> None:
    TIMES.clear()
    COUNTS.clear()


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[name] += time.perf_counter() - t0
            COUNTS[name] += 1

    return wrapper


@functools.cache
def _query_names() -> dict[str, str]:
    """The product's named statements (``workers/store/queries/*.sql``) by their text."""
    from workers.store.queries import queries

    named = queries()
    return {named.sql(name): name for name in named}


def _sql_label(query: Any) -> str:
    text = query if isinstance(query, str) else str(getattr(query, "_obj", query))
    name = _query_names().get(text)
    if name is not None:  # a named query: its name says more than its first words
        return "sql: " + name
    text = re.sub(r"\s+", " ", text).strip()
    m = re.match(r"(SELECT .*? FROM \w+|UPDATE \w+ SET \w+|INSERT INTO \w+|DELETE FROM \w+|\w+)", text)
    label = m.group(1) if m else text[:40]
    if label.startswith("SELECT") and "FOR UPDATE" in text and "SKIP LOCKED" not in text:
        label += " ... FOR UPDATE"
    return "sql: " + label[:70]


def instrument() -> None:
    """Wrap the product's functions (no source change) so their time is recorded."""
    import psycopg.types.json as pj

    from orchestrator import engine, spec
    from workers.coordination import advance
    from workers.store import run_state

    engine.RunState.from_json = classmethod(timed("RunState.from_json", engine.RunState.from_json.__func__))
    engine.RunState.to_json = timed("RunState.to_json", engine.RunState.to_json)
    spec.MissionSpec.from_document = classmethod(
        timed("MissionSpec.from_document", spec.MissionSpec.from_document.__func__)
    )
    spec.MissionSpec.to_document = timed("MissionSpec.to_document", spec.MissionSpec.to_document)
    engine.decide = timed("engine.decide", engine.decide)
    # advance() picks its path by calling these module functions by name, so wrapping them here
    # times every step, whichever unit of work takes it.
    advance.step = timed("advance.step (locking path, whole)", advance.step)
    run_state.load = timed("run_state.load (lock + cache or read)", run_state.load)
    run_state.save = timed("run_state.save (changed rows)", run_state.save)
    advance.step_if_current = timed("advance.step_if_current (one statement, whole)", advance.step_if_current)
    run_state.save_if_current = timed("run_state.save_if_current (the one statement)", run_state.save_if_current)
    advance._persist = timed("advance._persist (save + effects)", advance._persist)
    pj.set_json_dumps(timed("json.dumps (psycopg Jsonb)", json.dumps))
    pj.set_json_loads(timed("json.loads (psycopg jsonb)", json.loads))

    cur_execute = psycopg.Cursor.execute
    cur_executemany = psycopg.Cursor.executemany

    def execute(self: Any, query: Any, params: Any = None, **kw: Any) -> Any:
        label = _sql_label(query)
        t0 = time.perf_counter()
        try:
            return cur_execute(self, query, params, **kw)
        finally:
            TIMES[label] += time.perf_counter() - t0
            COUNTS[label] += 1
            TIMES["sql: (all statements)"] += time.perf_counter() - t0
            COUNTS["sql: (all statements)"] += 1

    def executemany(self: Any, query: Any, params_seq: Any, **kw: Any) -> Any:
        label = _sql_label(query) + " [executemany]"
        t0 = time.perf_counter()
        try:
            return cur_executemany(self, query, params_seq, **kw)
        finally:
            TIMES[label] += time.perf_counter() - t0
            COUNTS[label] += 1
            TIMES["sql: (all statements)"] += time.perf_counter() - t0
            COUNTS["sql: (all statements)"] += 1

    psycopg.Cursor.execute = execute  # type: ignore[method-assign]
    psycopg.Cursor.executemany = executemany  # type: ignore[method-assign]


# -- an in-process worker --------------------------------------------------------------------------
class LocalDispatcher:
    """The coordinator's sender: the real ``Dispatcher.send``, timed, with Celery sends replaced by an
    in-process queue (wake-ups and cancel flags still go to Redis)."""

    def __init__(self, redis_client: Any) -> None:
        from workers.messaging.dispatch import Dispatcher

        self.queue: collections.deque[tuple[str, str, int]] = collections.deque()
        self.inner = Dispatcher(celery=None, redis_client=redis_client)  # no publisher thread: inline
        self.inner.send_attempts = self._send  # type: ignore[method-assign]
        self.inner.send_assessment = lambda *a: True  # type: ignore[method-assign]
        self.cancel_flags = self.inner.cancel_flags

    def _send(self, run_id: str, attempts: list[tuple[str, int]]) -> bool:
        self.queue.extend((run_id, task_id, attempt) for task_id, attempt in attempts)
        return True

    def send(self, outcome: Any, assess_inline: Any = None) -> None:
        t0 = time.perf_counter()
        self.inner.send(outcome, assess_inline)
        TIMES["dispatcher.send (redis publish)"] += time.perf_counter() - t0
        COUNTS["dispatcher.send (redis publish)"] += 1


@contextmanager
def database(admin_url: str) -> Iterator[str]:
    from workers.store.db import upgrade

    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_path(admin_url, "/" + name)
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Harness:
    def __init__(self, db_url: str, redis_url: str, data_dir: Path) -> None:
        from api.http.app import create_app
        from config import Settings
        from workers.coordination.advance import Coordinator
        from workers.execution.executor import Executor
        from workers.store.projects import create_key, project_for_key
        from workers.wiring import Services

        # No eager hand-off: every attempt goes through the in-process queue (the broker's place), so
        # that the figures are per attempt as they were (overhead.py (a) measures the hand-off).
        self.settings = Settings(
            database_url=db_url, redis_url=redis_url, log_level="warning", data_dir=data_dir, eager_handoff_seconds=0.0
        )
        self.services = Services(self.settings)
        with psycopg.connect(db_url, row_factory=dict_row) as conn:
            self.key = create_key(conn, "bench")
            self.project_id = project_for_key(conn, self.key)
        self.app = create_app(self.settings, self.services)
        self.client = self.app.test_client()
        self.dispatcher = LocalDispatcher(self.services.redis)
        self.coordinator = Coordinator(self.services.db, self.dispatcher)
        self.executor = Executor(
            self.settings, self.services.db, self.coordinator, self.dispatcher.cancel_flags, "profile@local"
        )

    def start(self, doc: dict[str, Any]) -> str:
        from workers.coordination import runs
        from workers.store.missions import Limits
        from workers.support.clock import utcnow

        saved = dict(TIMES), dict(COUNTS)  # creating and starting the run is not part of an attempt
        r = self.client.post("/v1/missions", json=doc, headers={"Authorization": f"Bearer {self.key}"})
        assert r.status_code == 201, r.get_data(as_text=True)[:2000]
        mission_id = r.get_json()["id"]
        with self.coordinator.transaction() as uow:  # sends what the run starts when the block exits
            run_id = runs.execute(uow, self.project_id, mission_id, Limits(max_tasks=10_000), utcnow()).run_id
        TIMES.clear()
        TIMES.update(saved[0])
        COUNTS.clear()
        COUNTS.update(saved[1])
        return run_id

    def work(self, limit: int | None = None) -> tuple[int, float]:
        """Run queued attempts FIFO (solo worker); returns (attempts run, seconds)."""
        n = 0
        t0 = time.perf_counter()
        while self.dispatcher.queue and (limit is None or n < limit):
            run_id, task_id, attempt = self.dispatcher.queue.popleft()
            self.executor.run_attempt(run_id, task_id, attempt)
            n += 1
        return n, time.perf_counter() - t0

    def counting_transactions(self) -> None:
        """Count the transactions the executor and the coordinator open on the process's database
        (``Database.transaction``; statements in autocommit are not transactions of their own here)."""
        db = self.services.db
        original = db.transaction

        @contextmanager
        def transaction() -> Iterator[Any]:
            COUNTS["transactions (Database.transaction)"] += 1
            t0 = time.perf_counter()
            with original() as conn:
                yield conn
            TIMES["transactions (Database.transaction)"] += time.perf_counter() - t0

        db.transaction = transaction  # type: ignore[method-assign]


def wal_lsn(db_url: str) -> str:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return str(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])


def wal_bytes_since(db_url: str, lsn: str) -> int:
    """WAL written since ``lsn`` (cluster-wide: run on an otherwise idle server)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        return int(conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (lsn,)).fetchone()[0])


def report(title: str, attempts: int, seconds: float, state_row: dict[str, Any] | None, wal: int = 0) -> None:
    print(
        f"\n== {title}: {attempts} attempts in {seconds:.2f} s = {seconds / attempts * 1000:.2f} ms per attempt"
        " (single thread, no Celery)"
    )
    if state_row:
        print(
            f"   runs.state: {state_row['text'] / 1024:.1f} KiB as JSON text, {state_row['stored'] / 1024:.1f} KiB"
            f" stored (TOAST-compressed); runs.spec {state_row['spec'] / 1024:.1f} KiB stored;"
            f" events rows per attempt {state_row['events'] / attempts:.2f};"
            f" WAL per attempt {wal / attempts / 1024:.0f} KiB"
        )
    print(
        "   (calls and ms are per attempt; nested timers overlap, e.g. advance.step_if_current"
        " contains decide and save_if_current)"
    )
    print(f"   {'per attempt':58} {'calls':>7} {'ms':>9} {'% of attempt':>12}")
    per_attempt = seconds / attempts
    for name in sorted(TIMES, key=lambda k: -TIMES[k]):
        calls = COUNTS[name] / attempts
        ms = TIMES[name] / attempts * 1000
        if ms < 0.02 and not name.startswith("transactions"):
            continue
        print(f"   {name:58} {calls:7.2f} {ms:9.3f} {ms / 1000 / per_attempt * 100:11.1f}%")


def state_info(services: Any, run_id: str, all_runs: list[str]) -> dict[str, Any]:
    with psycopg.connect(services.settings.database_url, row_factory=dict_row) as conn:
        row = conn.execute(
            "SELECT pg_column_size(state) AS stored, octet_length(state::text) AS text,"
            " pg_column_size(spec) AS spec FROM runs WHERE id = %s",
            (run_id,),
        ).fetchone()
        events = conn.execute("SELECT count(*) AS n FROM events WHERE run_id = ANY(%s)", (all_runs,)).fetchone()
    return {**row, "events": events["n"]}


def _median_ms(fn: Callable[[Any], Any], arg: Any, *, reps: int) -> float:
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(arg)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000


def chain_split(db_url: str, run_ids: list[str]) -> None:
    """Hop and in-task medians of chain runs in-process: the Missions part of overhead.py's (a),
    without Celery (the next attempt starts right after the previous one's after-commit)."""
    hops: list[float] = []
    inside: list[float] = []
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        for run_id in run_ids:
            rows = conn.execute(
                "SELECT t.title, a.claimed_at, a.finished_at FROM attempts a JOIN tasks t ON t.id = a.task_id"
                " WHERE a.run_id = %s ORDER BY t.title",
                (run_id,),
            ).fetchall()
            hops += [(b["claimed_at"] - a["finished_at"]).total_seconds() * 1000 for a, b in itertools.pairwise(rows)]
            inside += [(r["finished_at"] - r["claimed_at"]).total_seconds() * 1000 for r in rows]
    print(
        f"   without Celery: hop (finished_at i -> claimed_at i+1) p50 {statistics.median(hops):.2f} ms,"
        f" in-task (claimed_at -> finished_at) p50 {statistics.median(inside):.2f} ms"
    )


def micro(services: Any, run_ids: dict[int, str]) -> None:
    """(De)serialisation cost of a stored state, by task count: what every coordinator step pays
    (a step decodes and rebuilds the whole state, then rebuilds and encodes it again)."""
    from orchestrator.engine import RunState
    from orchestrator.spec import MissionSpec

    print("\n== whole-state (de)serialisation per call, median (pure Python, no DB)")
    print(
        f"   {'tasks':>6} {'json.loads':>11} {'from_json':>10} {'(spec part)':>12} {'to_json':>9}"
        f" {'json.dumps':>11} {'sum':>9} {'x per attempt':>14}"
    )
    with psycopg.connect(services.settings.database_url, row_factory=dict_row) as conn:
        for n, run_id in sorted(run_ids.items()):
            # Since migration 0004 a run is stored split (runs.state, runs.spec, run_tasks rows);
            # rebuild the whole document to measure what a whole-state store would pay.
            from workers.store import run_state

            with conn.transaction():
                stored = run_state.load(conn, run_id, lock=False)
            assert stored is not None
            text = json.dumps(stored.state.to_json())
            reps = 40 if n <= 200 else 10
            doc = json.loads(text)
            state = RunState.from_json(doc)
            out = state.to_json()
            t_loads = _median_ms(json.loads, text, reps=reps)
            t_from = _median_ms(RunState.from_json, doc, reps=reps)
            t_spec = _median_ms(MissionSpec.from_document, doc["spec"], reps=reps)
            t_to = _median_ms(RunState.to_json, state, reps=reps)
            t_dumps = _median_ms(json.dumps, out, reps=reps)
            total = t_loads + t_from + t_to + t_dumps
            # what a whole-state store paid per attempt: 3 decodes and 2 encodes (before migration 0004)
            per_attempt = 3 * (t_loads + t_from) + 2 * (t_to + t_dumps)
            print(
                f"   {n:6d} {t_loads:9.2f}ms {t_from:8.2f}ms {t_spec:10.2f}ms {t_to:7.2f}ms"
                f" {t_dumps:9.2f}ms {total:7.2f}ms {per_attempt:12.2f}ms"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cprofile", type=Path, default=None, help="write .prof dumps here and print top functions")
    parser.add_argument("--big", type=int, default=2000, help="task count of the big fan-out (default 2000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each small case (default 5)")
    parser.add_argument("--only-small", action="store_true", help="skip the big fan-out")
    parser.add_argument(
        "--sample",
        type=int,
        default=200,
        help="attempts to run of the big fan-out (the middle layer; cost per attempt is steady)",
    )
    args = parser.parse_args(argv)
    admin_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    redis.Redis.from_url(redis_url).flushdb()
    instrument()
    with database(admin_url) as db_url:
        data_dir = Path(tempfile.mkdtemp(prefix="missions-bench-profile-"))
        h = Harness(db_url, redis_url, data_dir)
        h.counting_transactions()
        # warm-up: pools, imports
        h.start(chain_doc(f"warm-{uuid.uuid4().hex[:6]}", 3))
        h.work()
        run_ids: dict[int, str] = {}
        cases = [
            ("chain of 40", chain_doc("p-chain-40", 40), None),
            ("fan-out 10", fan_doc("p-fan-10", 10), None),
            ("fan-out 200", fan_doc("p-fan-200", 200), None),
            (f"fan-out {args.big} (first {args.sample} attempts)", fan_doc(f"p-fan-{args.big}", args.big), args.sample),
        ]
        if args.only_small:
            cases = cases[:3]
        for title, doc, limit in cases:
            reset()
            wal0 = wal_lsn(db_url)
            n = 0
            seconds = 0.0
            chain_runs: list[str] = []
            repeats = args.repeat if limit is None else 1
            for rep in range(repeats):
                run_id = h.start({**doc, "name": f"{doc['name']}-{rep}"})
                done, took = h.work(limit)
                n, seconds = n + done, seconds + took
                chain_runs.append(run_id)
                h.dispatcher.queue.clear()
            run_ids[len(doc["tasks"])] = run_id
            wal = wal_bytes_since(db_url, wal0)
            report(
                f"{title}{f' x{repeats}' if repeats > 1 else ''}",
                n,
                seconds,
                state_info(h.services, run_id, chain_runs),
                wal,
            )
            if title.startswith("chain"):
                chain_split(db_url, chain_runs)
            if args.cprofile:
                # A second run of the same shape under cProfile (profiling inflates the times above).
                again = {**doc, "name": doc["name"] + "-cprofile"}
                h.start(again)
                profiler = cProfile.Profile()
                profiler.enable()
                h.work(limit)
                profiler.disable()
                h.dispatcher.queue.clear()
                args.cprofile.mkdir(parents=True, exist_ok=True)
                path = args.cprofile / (re.sub(r"\W+", "_", title).strip("_") + ".prof")
                profiler.dump_stats(path)
                for order in ("tottime", "cumulative"):
                    buf = io.StringIO()
                    pstats.Stats(profiler, stream=buf).sort_stats(order).print_stats(18)
                    lines = buf.getvalue().splitlines()
                    head = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
                    print(f"   cProfile of a second run, top 18 by {order} (dump: {path}):")
                    print("\n".join("     " + line for line in lines[head : head + 19]))
        micro(h.services, run_ids)
        h.services.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    redis.Redis.from_url(redis_url).flushdb()
    return 0


if __name__ == "__main__":
    sys.exit(main())
