"""A bare Celery app for the overhead baseline: one no-op task, the same worker settings as Missions.

Run a worker with ``python bench/raw_celery.py worker --concurrency 8`` (RAW_REDIS_URL picks the
broker, default redis://127.0.0.1:6379/13). The task writes its start and finish times
(``time.time()``, seconds) to a Redis list so the benchmark can compute hops and throughput the same
way it does for Missions' attempts table.
"""

from __future__ import annotations

import os
import sys
import time

import redis
from celery import Celery

from workers.messaging.celery_app import DELIVERY_SETTINGS

RAW_REDIS_URL = os.environ.get("RAW_REDIS_URL", "redis://127.0.0.1:6379/13")
QUEUE = "raw"
TASK = "raw.noop"

app = Celery("raw", broker=RAW_REDIS_URL, set_as_current=False)
# The delivery settings Missions' worker uses, without its queues and beat schedule.
app.conf.update(**DELIVERY_SETTINGS, task_default_queue=QUEUE)

_redis: redis.Redis | None = None


def _client() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(RAW_REDIS_URL)
    return _redis


@app.task(name=TASK)
def noop(key: str, index: int) -> None:
    """Returns at once; records ``index start finish`` under ``key`` (one RPUSH, after the work)."""
    start = time.time()
    finish = time.time()
    _client().rpush(key, f"{index} {start:.6f} {finish:.6f}")


if __name__ == "__main__":
    concurrency = "8"
    args = sys.argv[1:]
    if "--concurrency" in args:
        concurrency = args[args.index("--concurrency") + 1]
    app.worker_main(
        [
            "worker",
            "--loglevel",
            "WARNING",
            "--pool",
            "threads",
            "--concurrency",
            concurrency,
            "--queues",
            QUEUE,
            "--hostname",
            f"raw-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )
