"""The Redis broker transport Missions uses: kombu's, reusing one Redis client per channel.

kombu's Redis channel builds a new ``redis.Redis`` client object for every synchronous operation
(each publish, each ``QoS`` append and each ack), on the channel's one connection pool. With
redis-py 8 building a client costs about 150 µs, more than the Redis round trip it wraps, and a
no-op task pays it three times (its publish, its delivery bookkeeping and its ack). A
``redis.Redis`` client is thread-safe (every command takes a connection from the pool), so one
client per channel does the same work. Everything else is kombu's transport unchanged.

Selected with Celery's ``broker_transport`` setting (``transport_for``) for ``redis://`` broker
URLs only; ``rediss://``, ``sentinel://`` and other schemes keep kombu's own transport, which
parses their options.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis
from kombu.transport import redis as kombu_redis

TRANSPORT = "workers.messaging.broker:Transport"


def transport_for(broker_url: str) -> str | None:
    """The transport for ``broker_url``: ours for plain ``redis://``, else kombu's (None)."""
    return TRANSPORT if urlsplit(broker_url).scheme == "redis" else None


class Channel(kombu_redis.Channel):
    _sync_client: Any = None
    _sync_pool: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        try:
            if asynchronous:  # the consumer's BRPOP/LISTEN client: kombu keeps it itself
                return super()._create_client(asynchronous=True)  # type: ignore[misc]  # (kombu has no stubs for it)
            pool = self.pool  # kombu drops and rebuilds its pool after a fork or a disconnect
            if self._sync_client is None or self._sync_pool is not pool:
                self._sync_client, self._sync_pool = super()._create_client(asynchronous=False), pool  # type: ignore[misc]
            return self._sync_client
        except AttributeError as exc:
            # kombu 5.7, after the broker went away: when the consumer closes its connection to
            # reconnect, it closes it twice, and the second close finds the connection's details
            # gone (``conninfo`` None) while it restores unacknowledged messages. That
            # AttributeError is not a connection error, so Celery gave up and the worker exited
            # (with status 0). As a connection error it is ignored on close, and the worker
            # reconnects (bench/chaos.py, Redis restarts).
            if getattr(self.connection, "client", None) is not None:
                raise
            raise redis.exceptions.ConnectionError("the broker connection was closed") from exc


class Transport(kombu_redis.Transport):
    Channel = Channel
