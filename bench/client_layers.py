#!/usr/bin/env python
"""What the rate limiter and the Idempotency-Key layer cost per request, before/after in one run.

    python bench/client_layers.py                 # 2,000 requests per case, 5 interleaved rounds
    python bench/client_layers.py --requests 300  # a smoke run

It creates a fresh database ``bench_<random>`` on DATABASE_URL's server (default the local one),
applies the migrations, creates a key, flushes REDIS_URL's database (default
redis://127.0.0.1:6379/14), and drives the Flask app in this process through its test client (no
HTTP server, so that what is measured is the app's own work per request: the key lookup, the
limiter's Redis calls, the idempotency statements). Cases, each timed in interleaved rounds so that
the machine's load moves them alike:

- ``GET /v1/missions`` with the limiter switched off (the baseline) and on (Redis storage);
- ``POST /v1/missions/{id}/abort`` on a draft mission (a cheap 409 that writes nothing) without
  an Idempotency-Key, with a new key each time (claim + store) and with one repeated key (replay).

Prints each case's mean time per request in every round, their median and best, and the
differences (on a machine shared with other work the best round is the steadier figure).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import redis
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from overhead import with_path  # noqa: E402

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per case and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    admin_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    name = f"bench_{uuid.uuid4().hex[:10]}"
    db_url = with_path(admin_url, "/" + name)
    redis.Redis.from_url(redis_url).flushdb()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    services = None
    try:
        from api.http.app import create_app
        from config import Settings
        from workers.store.db import upgrade
        from workers.store.projects import create_key
        from workers.wiring import Services

        upgrade(db_url)
        with psycopg.connect(db_url, row_factory=dict_row) as conn:
            key = create_key(conn, "bench")
        unreached = 10**9  # (the limit is counted, never reached)
        settings = Settings(database_url=db_url, redis_url=redis_url, rate_limit=unreached, rate_limit_burst=unreached)
        services = Services(settings)
        app = create_app(settings, services)
        (limiter,) = app.extensions["limiter"]
        client = app.test_client()
        auth = {"Authorization": f"Bearer {key}"}
        mission = {
            "name": "draft",
            "tasks": [{"title": "T", "description": "d", "assignTo": "w"}],
            "team": {"name": "t", "volatile": True, "agents": [{"name": "w", "model": "scripted/x"}]},
        }
        created = client.post("/v1/missions", json=mission, headers=auth)
        assert created.status_code == 201, created.get_json()
        abort = f"/v1/missions/{created.get_json()['id']}/abort"
        counter = iter(range(10**12))

        def get(enabled: bool) -> Callable[[], None]:
            def run() -> None:
                limiter.enabled = enabled
                answer = client.get("/v1/missions", headers=auth)
                assert answer.status_code == 200 and ("X-RateLimit-Limit" in answer.headers) == enabled

            return run

        def post(header: Callable[[], dict[str, str]]) -> Callable[[], None]:
            def run() -> None:
                limiter.enabled = True
                answer = client.post(abort, headers={**auth, **header()})
                assert answer.status_code == 409, answer.get_json()

            return run

        cases: dict[str, Callable[[], None]] = {
            "GET, limiter off": get(False),
            "GET, limiter on": get(True),
            "POST, no Idempotency-Key": post(dict),
            "POST, new Idempotency-Key": post(lambda: {"Idempotency-Key": f"k{next(counter)}"}),
            "POST, replayed Idempotency-Key": post(lambda: {"Idempotency-Key": "same"}),
        }
        for run in cases.values():  # warm up: pools, prepared statements, the limiter's script
            for _ in range(50):
                run()
        means: dict[str, list[float]] = {label: [] for label in cases}
        for _ in range(args.rounds):
            for label, run in cases.items():
                start = time.perf_counter()
                for _ in range(args.requests):
                    run()
                means[label].append((time.perf_counter() - start) / args.requests)
        median = {label: statistics.median(values) for label, values in means.items()}
        best = {label: min(values) for label, values in means.items()}
        print(f"{args.requests} requests per case, {args.rounds} interleaved rounds: each round's mean per request")
        print(f"  {'case':<32} {'median':>8} {'best':>8}   rounds (µs)")
        for label in cases:
            rounds = " ".join(f"{v * 1e6:.0f}" for v in means[label])
            print(f"  {label:<32} {median[label] * 1e6:8.0f} {best[label] * 1e6:8.0f}   {rounds}")
        print("cost per request (median / best round):")
        for what, case, base in (
            ("rate limiter (Redis)", "GET, limiter on", "GET, limiter off"),
            ("Idempotency-Key, first request", "POST, new Idempotency-Key", "POST, no Idempotency-Key"),
            ("Idempotency-Key, replay", "POST, replayed Idempotency-Key", "POST, no Idempotency-Key"),
        ):
            print(f"  {what:<32} {(median[case] - median[base]) * 1e6:8.0f} {(best[case] - best[base]) * 1e6:8.0f} µs")
    finally:
        if services is not None:
            services.close()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
