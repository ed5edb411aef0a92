#!/usr/bin/env python
"""Live event streams: how long an event takes from its commit to N SSE clients, and what the API
spends per delivered event, for the code of this tree and (side by side, alternating) another tree.

    python bench/streams.py [--clients 100,500,1000] [--runs 10] [--rate 1] [--seconds 12]
                            [--rounds 3] [--baseline /path/to/other/tree]

``bench/sse_streams.py`` measures what idle streams cost; this one measures streams that follow
running missions. For each measurement it starts one ``missions api`` (gunicorn, gevent, one
process) from the tree being measured, creates and executes ``--runs`` missions over HTTP (no
worker: each run stays active), and opens ``N`` clients spread evenly over the runs (one client
process, asyncio, raw HTTP/1.0 so that no chunk framing needs parsing). Once every client has had
its replay, a writer plays a worker: every ``1 / (rate * runs)`` seconds it commits one
``task:output`` event of the next run (an ``INSERT`` in autocommit; the time it returns is the
commit time) and hands the wake-up to a ``WakeupPublisher``, as a coordinator step does. After
``--seconds`` it commits each run's ``mission:done``; each stream ends after it.

Printed per measurement: commit-to-receipt p50, p95 and max over every (client, event) pair, the
events each client missed or got out of order (must be 0), and the API's CPU seconds (gunicorn's
master and worker, user + system) per delivered event while the writer ran, and how many
connections the API turned away with 503 (no pooled connection within 3 s: on a loaded machine a
thousand clients connecting at once can meet it; the client comes back after 5 s, as a good client
does, and the count is printed). Clocks: the writer and
the clients read ``CLOCK_MONOTONIC``, which is one clock for every process of the machine.

Both trees run against one database ``bench17_<random>`` (migrated by this tree; the baseline's
queries work on it) on ``DATABASE_URL`` and use ``REDIS_URL`` (default redis://127.0.0.1:6379/9,
**flushed**); the database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from overhead import DEFAULT_DATABASE_URL, free_port, independent_doc, pct, wait_for  # noqa: E402
from sse_streams import children, create_database, drop_database, process_cpu  # noqa: E402

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/9"
CHUNK = "x" * 120  # about the size of a streamed output chunk


# --- the clients (a subprocess: ``streams.py --client``) ----------------------------------------


async def _follow(port: int, key: str, mission_id: str, run_id: str, ready: asyncio.Event) -> list[Any]:
    refused = 0
    while True:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        writer.write(
            f"GET /v1/missions/{mission_id}/events?runId={run_id} HTTP/1.0\r\n"
            f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 200 " in status:
            break
        writer.close()
        if b" 503 " not in status or refused >= 5:
            raise SystemExit(f"stream refused: {head[:200]!r}")
        # The API answers 503 with Retry-After when no pooled connection came within 3 s (a
        # thousand clients connecting at once on a loaded machine): a good client comes back.
        refused += 1
        await asyncio.sleep(5)
    ids: list[int] = []
    times: list[float] = []
    buffer = b""
    while True:
        chunk = await reader.read(1 << 16)
        if not chunk:
            break
        now = time.monotonic()
        buffer += chunk
        *frames, buffer = buffer.split(b"\n\n")
        for frame in frames:
            at = frame.rfind(b"id:")
            if at >= 0 and (at == 0 or frame[at - 1 : at] == b"\n"):
                ids.append(int(frame[at + 3 :].split(b"\n", 1)[0]))
                times.append(now)
                ready.set()
    writer.close()
    return [run_id, ids, times, refused]


async def _clients(port: int, key: str, targets: list[tuple[str, str]], out: str) -> None:
    readies = [asyncio.Event() for _ in targets]
    tasks = [asyncio.create_task(_follow(port, key, m, r, e)) for (m, r), e in zip(targets, readies, strict=True)]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in readies)), 120)
    print("ready", flush=True)
    cpu = time.process_time()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 600)
    Path(out).write_text(json.dumps({"streams": results, "cpu": time.process_time() - cpu}))


def client_main(argv: list[str]) -> int:
    port, key, out, spec = int(argv[0]), argv[1], argv[2], json.loads(argv[3])
    asyncio.run(_clients(port, key, [tuple(t) for t in spec], out))  # type: ignore[misc]
    return 0


# --- one measurement ---------------------------------------------------------------------------


class Api:
    """``missions api`` from ``tree``, in its own process group."""

    def __init__(self, tree: Path, db_url: str, redis_url: str, logs: Path) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(tree),  # ahead of the editable install of this tree
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "MISSIONS_PORT": str(self.port),
            "MISSIONS_LOG_LEVEL": "warning",
            # A load generator, not a client to limit: the API key gets a limit it never reaches (the limiter
            # still runs on every request, so its cost is in the figures).
            "MISSIONS_RATE_LIMIT": "1000000",
            "MISSIONS_RATE_LIMIT_BURST": "10000000",
            "MISSIONS_MAX_STREAMS_PER_KEY": "1000000",  # (its clients share one key)
        }
        self.log = open(logs / f"api-{self.port}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from api.cli import main; main()", "api"],
            cwd=tree,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.http = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        wait_for(self._healthy, 60, "the API")

    def _healthy(self) -> bool:
        try:
            self.http.request("GET", "/healthz")
            return self.http.getresponse().read() is not None
        except OSError:
            self.http.close()
            return False

    def request(
        self, method: str, path: str, headers: dict[str, str], body: str | None = None
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """One request on the kept-alive connection, opened again once if the server closed it."""
        for again in (True, False):
            try:
                self.http.request(method, path, body=body, headers=headers)
                response = self.http.getresponse()
                return response, response.read()
            except (http.client.RemoteDisconnected, ConnectionError):
                self.http.close()
                if not again:
                    raise
        raise AssertionError("unreachable")

    def call(self, method: str, path: str, key: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        response, data = self.request(method, path, headers, None if body is None else json.dumps(body))
        if response.status >= 300:
            raise SystemExit(f"{method} {path}: {response.status} {data[:300]!r}")
        return json.loads(data) if data else None

    def cpu(self) -> float:
        return sum(process_cpu(pid) for pid in [self.process.pid, *children(self.process.pid)])

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.http.close()
        self.log.close()


def measure(
    tree: Path, clients: int, args: argparse.Namespace, db_url: str, redis_url: str, key: str, logs: Path
) -> dict[str, Any]:
    from workers.messaging.wakeups import WakeupPublisher

    api = Api(tree, db_url, redis_url, logs)
    publisher = WakeupPublisher(redis.Redis.from_url(redis_url))
    try:
        runs: list[tuple[str, str]] = []
        for n in range(args.runs):
            mission = api.call("POST", "/v1/missions", key, independent_doc(f"streams-{uuid.uuid4().hex[:8]}-{n}", 1))
            run = api.call("POST", f"/v1/missions/{mission['id']}/execute", key)
            runs.append((mission["id"], run["id"]))
        targets = [runs[i % len(runs)] for i in range(clients)]
        out = logs / f"clients-{api.port}.json"
        follower = subprocess.Popen(
            [sys.executable, __file__, "--client", str(api.port), key, str(out), json.dumps(targets)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert follower.stdout is not None
        if follower.stdout.readline().strip() != "ready":
            raise SystemExit("the clients did not all get their replay")
        time.sleep(1.0)
        committed: dict[int, float] = {}
        by_run: dict[str, list[int]] = {run_id: [] for _, run_id in runs}
        interval = 1.0 / (args.rate * args.runs)
        total = int(args.seconds * args.rate * args.runs)
        with psycopg.connect(db_url, autocommit=True) as conn:
            cpu0 = api.cpu()
            started = time.monotonic()
            for k in range(total + len(runs)):
                mission_id, run_id = runs[k % len(runs)]
                kind = "task:output" if k < total else "mission:done"
                data = {"missionId": mission_id, "runId": run_id, "taskId": "task_bench", "chunk": CHUNK}
                row = conn.execute(
                    "INSERT INTO events (run_id, mission_id, type, data) VALUES (%s, %s, %s, %s) RETURNING id",
                    (run_id, mission_id, kind, Jsonb(data)),
                ).fetchone()
                assert row is not None
                committed[row[0]] = time.monotonic()
                by_run[run_id].append(row[0])
                publisher.publish(mission_id, run_id, row[0])
                pause = started + (k + 1) * interval - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
        follower.wait(300)
        cpu1 = api.cpu()
        received = json.loads(out.read_text())
        results = received["streams"]
    finally:
        publisher.flush(2)
        api.stop()
    latencies: list[float] = []
    missed = disordered = 0
    refused = 0
    for run_id, ids, times, turned_away in results:
        refused += turned_away
        if any(b <= a for a, b in itertools.pairwise(ids)):
            disordered += 1
        live = [(i, t) for i, t in zip(ids, times, strict=True) if i in committed]
        missed += len(set(by_run[run_id]) - {i for i, _ in live})
        latencies += [t - committed[i] for i, t in live]
    return {
        "p50": pct(latencies, 50),
        "p95": pct(latencies, 95),
        "max": max(latencies) if latencies else float("nan"),
        "delivered": len(latencies),
        "missed": missed,
        "disordered": disordered,
        "cpu_per_event": (cpu1 - cpu0) / max(1, len(latencies)),
        "refused": refused,
        "client_cpu_per_event": received["cpu"] / max(1, len(latencies)),
    }


def main() -> int:
    if sys.argv[1:2] == ["--client"]:
        return client_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="100,500,1000", help="comma-separated client counts")
    parser.add_argument("--runs", type=int, default=10, help="running missions followed (default 10)")
    parser.add_argument("--rate", type=float, default=1.0, help="events per second per run (default 1)")
    parser.add_argument("--seconds", type=float, default=12.0, help="how long the writer writes (default 12)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every (tree, clients) pair (default 3)")
    parser.add_argument("--baseline", type=Path, help="another tree (a git worktree) measured alternately")
    args = parser.parse_args()
    sizes = [int(n) for n in args.clients.split(",")]
    trees = [("this", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    admin_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    rds = redis.Redis.from_url(redis_url)
    rds.flushdb()
    name, db_url = create_database(admin_url, "bench17_")
    logs = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    figures: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        from workers.store.db import upgrade
        from workers.store.projects import create_key

        upgrade(db_url)
        with psycopg.connect(db_url, row_factory=psycopg.rows.dict_row) as conn:
            key = create_key(conn, "bench")
        print(f"{args.runs} runs, {args.rate:g} event/s each for {args.seconds:g} s; logs in {logs}")
        print(
            f"{'tree':9} {'clients':>7} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'events':>7} "
            f"{'missed':>6} {'order':>5} {'CPU us/event':>12} {'503s':>5} {'client us':>9}"
        )
        for round_ in range(args.rounds):
            for clients in sizes:
                order = trees if round_ % 2 == 0 else trees[::-1]  # alternate which tree goes first
                for label, tree in order:
                    f = measure(tree, clients, args, db_url, redis_url, key, logs)
                    figures.setdefault((label, clients), []).append(f)
                    print(
                        f"{label:9} {clients:7d} {f['p50'] * 1e3:8.1f} {f['p95'] * 1e3:8.1f} {f['max'] * 1e3:8.1f} "
                        f"{f['delivered']:7d} {f['missed']:6d} {f['disordered']:5d} {f['cpu_per_event'] * 1e6:12.1f} "
                        f"{f['refused']:5d} {f['client_cpu_per_event'] * 1e6:9.1f}",
                        flush=True,
                    )
        print("\nranges over the rounds (p95 ms; max ms; CPU us per delivered event):")
        for (label, clients), rows in sorted(figures.items(), key=lambda item: (item[0][1], item[0][0])):

            def span(key: str, scale: float, rows: list[dict[str, Any]] = rows) -> str:
                values = [row[key] * scale for row in rows]
                return f"{min(values):.1f}-{max(values):.1f}"

            bad = sum(row["missed"] + row["disordered"] for row in rows)
            print(
                f"  {label:9} {clients:5d} clients: p95 {span('p95', 1e3)}; max {span('max', 1e3)}; "
                f"CPU {span('cpu_per_event', 1e6)}; missed or out of order: {bad}"
            )
    finally:
        drop_database(admin_url, name)
        rds.flushdb()
    return 0


if __name__ == "__main__":
    sys.exit(main())
