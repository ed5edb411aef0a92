"""Publishes per second: flask-sse's stock ``publish`` against ``publish_wakeup`` on a shared client.

flask-sse builds a new Redis client, and so opens a new TCP connection, on every publish;
``workers.messaging.wakeups.publish_wakeup`` reuses the process's one client. Run against a real Redis:

    python bench/sse_publish.py [--count 5000]     # REDIS_URL, default redis://127.0.0.1:6379/15

Nothing is subscribed to the channel, so both sides measure the cost of publishing alone.
"""

from __future__ import annotations

import argparse
import os
import time

import redis
from flask import Flask
from flask_sse import sse

from workers.messaging.wakeups import publish_wakeup

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
MISSION = "msn_bench"
RUN = "run_bench"


def stock_publishes_per_second(redis_url: str, count: int) -> float:
    app = Flask("bench")
    app.config["REDIS_URL"] = redis_url
    with app.app_context():
        sse.publish({"runId": RUN, "eventId": 0}, channel=f"mission:{MISSION}")  # import and DNS warm-up
        started = time.perf_counter()
        for event_id in range(count):
            sse.publish({"runId": RUN, "eventId": event_id}, channel=f"mission:{MISSION}")
        return count / (time.perf_counter() - started)


def shared_publishes_per_second(redis_url: str, count: int) -> float:
    client = redis.Redis.from_url(redis_url)
    try:
        client.ping()  # the one connection is opened before the clock starts
        started = time.perf_counter()
        for event_id in range(count):
            publish_wakeup(client, MISSION, RUN, event_id)
        return count / (time.perf_counter() - started)
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="publishes per contender (default 5000)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL)
    args = parser.parse_args()

    stock = stock_publishes_per_second(args.redis_url, args.count)
    shared = shared_publishes_per_second(args.redis_url, args.count)
    print(f"Redis: {args.redis_url}, {args.count} publishes each")
    print(f"flask-sse publish (new connection per publish): {stock:10,.0f} publishes/s")
    print(f"publish_wakeup (one shared client):             {shared:10,.0f} publishes/s")
    print(f"shared client is {shared / stock:.1f}x faster")


if __name__ == "__main__":
    main()
