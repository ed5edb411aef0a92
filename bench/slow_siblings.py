"""What messages of several attempts cost slow attempts: missions of parallel tasks whose agent
takes a while (a scripted delay), run with the product's batching and, in the same run, with one
message per attempt (``MISSIONS_BATCH_ATTEMPTS=1``) as the baseline.

For each mission it prints the spread of the attempts' claims (first to last; a thread that gets a
message of five starts the first and sends the other four on after ``MISSIONS_BATCH_RELEASE_SECONDS``)
and the run's span (first attempt created to last finished).

    python bench/slow_siblings.py                      # 5 tasks of 1 s, 6 missions per setting
    python bench/slow_siblings.py --tasks 8 --delay 0.5 --release-seconds 0.05
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead  # the harness of bench/overhead.py (processes, database, API calls)


def run(
    batch: int | None, release: float | None, tasks: int, delay: float, missions: int
) -> tuple[list[float], list[float]]:
    """(claim spreads in ms, run spans in s) of ``missions`` missions with these settings."""
    admin_url = os.environ.get("DATABASE_URL") or overhead.DEFAULT_DATABASE_URL
    redis_url = os.environ.get("REDIS_URL") or overhead.DEFAULT_REDIS_URL
    raw_redis_url = overhead.with_path(redis_url, f"/{overhead.RAW_REDIS_DB}")
    workdir = Path(tempfile.mkdtemp(prefix="missions-siblings-"))
    bench = overhead.Bench(
        admin_url, redis_url, raw_redis_url, workdir, batch_attempts=batch, batch_release_seconds=release
    )
    spreads, spans = [], []
    try:
        bench.setup()
        for i in range(missions):
            doc = overhead.mission_doc(f"siblings-{i}", [{"title": f"t{k}"} for k in range(tasks)])
            doc["team"]["agents"][0]["script"] = [{"output": "x", "delay": delay}]
            run_id = bench.execute(bench.create(doc)["id"])
            bench.wait_runs([run_id], 120)
            with bench.connect() as conn:
                row = conn.execute(
                    "SELECT extract(epoch FROM max(claimed_at) - min(claimed_at)) AS spread,"
                    "       extract(epoch FROM max(finished_at) - min(created_at)) AS span"
                    "  FROM attempts WHERE run_id = %s",
                    (run_id,),
                ).fetchone()
            spreads.append(float(row["spread"]) * 1000)
            spans.append(float(row["span"]))
    finally:
        bench.teardown()
    return spreads, spans


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5, help="parallel tasks per mission (default 5)")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds each agent call takes (default 1)")
    parser.add_argument("--missions", type=int, default=6, help="missions per setting (default 6)")
    parser.add_argument("--release-seconds", type=float, default=None, help="MISSIONS_BATCH_RELEASE_SECONDS")
    args = parser.parse_args()
    print(
        f"{args.missions} missions x {args.tasks} parallel tasks of {args.delay:g} s, one worker"
        f" (concurrency {overhead.CONCURRENCY}, threads)"
    )
    for name, batch in (("messages of several", None), ("a message each", 1)):
        spreads, spans = run(batch, args.release_seconds, args.tasks, args.delay, args.missions)
        print(
            f"  {name:20} claim spread {min(spreads):6.0f}-{max(spreads):6.0f} ms (median"
            f" {statistics.median(spreads):4.0f}); run span {min(spans):.3f}-{max(spans):.3f} s (median"
            f" {statistics.median(spans):.3f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
