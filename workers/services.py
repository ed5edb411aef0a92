"""The connections a process holds: one Postgres pool and one Redis client, opened on first use."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import redis
from psycopg_pool import ConnectionPool

from config import Settings
from workers.db import create_pool
from workers.events import WakeupHub, WakeupPublisher, latest_event_ids


class Services:
    def __init__(self, settings: Settings) -> None:
        if not settings.database_url:
            raise ValueError("DATABASE_URL is not set (use `missions up` for the embedded default)")
        self.settings = settings
        self._lock = threading.Lock()
        self._pool: ConnectionPool | None = None
        self._redis: redis.Redis | None = None
        self._celery: Any = None
        self._wakeups: WakeupPublisher | None = None
        self._hub: WakeupHub | None = None
        self._dispatcher: Any = None

    @property
    def pool(self) -> ConnectionPool:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    assert self.settings.database_url
                    pool = create_pool(self.settings.database_url, max_size=self.settings.db_pool_size)
                    pool.open(wait=False)
                    self._pool = pool
        return self._pool

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            with self._lock:
                if self._redis is None:
                    if not self.settings.redis_url:
                        raise ValueError("REDIS_URL is not set (use `missions up` for the embedded default)")
                    self._redis = redis.Redis.from_url(
                        self.settings.redis_url, health_check_interval=30, socket_keepalive=True
                    )
        return self._redis

    @property
    def celery(self) -> Any:
        """A Celery app used to send messages (workers build their own, with the task bodies)."""
        if self._celery is None:
            with self._lock:
                if self._celery is None:
                    from workers.celery_app import create_celery

                    self._celery = create_celery(self.settings)
        return self._celery

    @property
    def wakeups(self) -> WakeupPublisher:
        """The process's wake-up publisher (one background thread, started on first publish)."""
        if self._wakeups is None:
            client = self.redis  # (takes the lock itself)
            with self._lock:
                if self._wakeups is None:
                    self._wakeups = WakeupPublisher(client)
        return self._wakeups

    @property
    def wakeup_hub(self) -> WakeupHub:
        """The process's receiver of wake-ups for its event streams (one pub/sub connection)."""
        if self._hub is None:
            client = self.redis  # (takes the lock itself)
            with self._lock:
                if self._hub is None:
                    self._hub = WakeupHub(client, self._latest_event_ids)
        return self._hub

    def _latest_event_ids(self, run_ids: list[str]) -> dict[str, int]:
        with self.pool.connection() as conn:
            return latest_event_ids(conn, run_ids)

    @property
    def dispatcher(self) -> Any:
        if self._dispatcher is None:
            from workers.dispatch import Dispatcher

            self._dispatcher = Dispatcher(self.celery, self.redis, self.wakeups)
        return self._dispatcher

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside one transaction: committed on success, rolled back on error."""
        with self.pool.connection() as conn:
            yield conn

    @contextmanager
    def autocommit(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection where each statement commits on its own: one round trip for a
        single-statement write (no BEGIN, no COMMIT)."""
        with self.pool.connection() as conn:
            conn.autocommit = True
            try:
                yield conn
            finally:
                conn.autocommit = False

    def close(self) -> None:
        self._dispatcher = None
        if self._hub is not None:
            self._hub.close()
            self._hub = None
        if self._wakeups is not None:
            self._wakeups.flush(2.0)
            self._wakeups = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None
        if self._celery is not None:
            self._celery.close()
            self._celery = None
