#!/usr/bin/env python
"""What idle event streams cost: Redis connections, Postgres queries and API CPU while N clients
hold ``GET /v1/missions/{id}/events`` open on runs that have nothing new to say.

    python bench/sse_streams.py [--streams 200] [--missions 20] [--seconds 10]

It creates a database ``bench_<random>`` on ``DATABASE_URL`` (dropped at the end), uses
``REDIS_URL`` (default redis://127.0.0.1:6379/14, **flushed**), starts ``missions api`` (gunicorn,
gevent) and no worker: each mission is executed once, so its run stays active with its first task
queued and its stream stays open. Once every stream has had its replay, it measures for
``--seconds``: the pub/sub connections on the Redis server, the transactions of the bench database
per second (``pg_stat_database``) and the CPU of the API process.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import redis
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from overhead import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, free_port, independent_doc, with_path  # noqa: E402


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children that were waited for (gunicorn's worker
    is a child of its master: both are summed by the caller)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(child) for child in text]
    return found


def create_database(admin_url: str, prefix: str) -> tuple[str, str]:
    """A new database ``<prefix><random>`` on the server of ``admin_url``: its name and URL."""
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]  # (a name made above)
    return name, with_path(admin_url, "/" + name)


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def transactions(conn: psycopg.Connection, name: str) -> int:
    row = conn.execute(
        "SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = %s", (name,)
    ).fetchone()
    return int(row["n"])


def hold(port: int, key: str, mission_id: str, ready: threading.Semaphore, stop: threading.Event) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", f"/v1/missions/{mission_id}/events", headers={"Authorization": f"Bearer {key}"})
    response = conn.getresponse()
    assert response.status == 200, response.status
    announced = False
    while not stop.is_set():
        line = response.fp.readline()
        if not line:
            break
        if not announced and line.startswith(b"id:"):  # the replay reached the client
            ready.release()
            announced = True
    conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--missions", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    admin_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    port = free_port()
    rds = redis.Redis.from_url(redis_url)
    rds.flushdb()
    name, db_url = create_database(admin_url, "bench_")
    api = None
    stop = threading.Event()
    try:
        from workers.store.db import upgrade
        from workers.store.projects import create_key

        upgrade(db_url)
        with psycopg.connect(db_url, row_factory=dict_row) as conn:
            key = create_key(conn, "bench")
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "MISSIONS_PORT": str(port),
            "MISSIONS_LOG_LEVEL": "warning",
            # A load generator, not a client to limit: the API key gets a limit it never reaches (the limiter
            # still runs on every request, so its cost is in the figures).
            "MISSIONS_RATE_LIMIT": "1000000",
            "MISSIONS_RATE_LIMIT_BURST": "10000000",
            "MISSIONS_MAX_STREAMS_PER_KEY": "1000000",  # (its clients share one key)
        }
        api = subprocess.Popen(
            [sys.executable, "-c", "from api.cli import main; main()", "api"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(200):
            try:
                client.request("GET", "/healthz")
                client.getresponse().read()
                break
            except OSError:
                client.close()
                time.sleep(0.1)
        auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        mission_ids = []
        for i in range(args.missions):
            client.request("POST", "/v1/missions", body=json.dumps(independent_doc(f"sse-{i}", 1)), headers=auth)
            mission_ids.append(json.loads(client.getresponse().read())["id"])
            client.request("POST", f"/v1/missions/{mission_ids[-1]}/execute", headers=auth)
            client.getresponse().read()
        ready = threading.Semaphore(0)
        threads = [
            threading.Thread(target=hold, args=(port, key, mission_ids[i % len(mission_ids)], ready, stop), daemon=True)
            for i in range(args.streams)
        ]
        for thread in threads:
            thread.start()
        for _ in threads:
            if not ready.acquire(timeout=60):
                raise SystemExit("not every stream got its replay within 60 s")
        time.sleep(1.0)
        pids = [api.pid, *children(api.pid)]
        with psycopg.connect(admin_url, autocommit=True, row_factory=dict_row) as conn:
            # An idle backend reports its transactions to pg_stat_database up to 10 s late: let
            # those of the setup arrive before the clock starts.
            time.sleep(11)
            xacts0, cpu0, t0 = transactions(conn, name), sum(process_cpu(p) for p in pids), time.monotonic()
            time.sleep(args.seconds)
            time.sleep(1.2)  # (an active backend reports at least once a second)
            xacts1, cpu1 = transactions(conn, name), sum(process_cpu(p) for p in pids)
            elapsed = time.monotonic() - t0
        pubsub = len(rds.client_list(_type="pubsub"))
        print(f"{args.streams} idle streams on {args.missions} runs, measured over {elapsed:.1f} s:")
        print(f"  Redis pub/sub connections:            {pubsub}")
        print(f"  Postgres transactions per second:     {(xacts1 - xacts0) / elapsed:.1f}")
        print(f"  API CPU (share of one core):          {100 * (cpu1 - cpu0) / elapsed:.1f}%")
    finally:
        stop.set()
        if api is not None:
            os.killpg(api.pid, signal.SIGKILL)
            api.wait(10)
        drop_database(admin_url, name)
        rds.flushdb()
    return 0


if __name__ == "__main__":
    sys.exit(main())
