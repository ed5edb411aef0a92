"""The connections a process holds: one Postgres pool and one Redis client, opened on first use."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import redis
from psycopg_pool import ConnectionPool

from config import Settings
from workers.store.db import create_pool
from workers.messaging.wakeups import WakeupHub, WakeupPublisher, latest_event_ids

T = TypeVar("T")


class Services:
    def __init__(self, settings: Settings) -> None:
        if not settings.database_url:
            raise ValueError("DATABASE_URL is not set (use `missions up` for the embedded default)")
        self.settings = settings
        self._lock = threading.RLock()
        self._pool: ConnectionPool | None = None
        self._redis: redis.Redis | None = None
        self._celery: Any = None
        self._wakeups: WakeupPublisher | None = None
        self._hub: WakeupHub | None = None
        self._dispatcher: Any = None

    def _once(self, attr: str, build: Callable[[], T]) -> T:
        """``self.<attr>``, built by ``build`` on first use, once however many threads ask (the lock
        is reentrant: a build may use other services)."""
        value = getattr(self, attr)
        if value is None:
            with self._lock:
                value = getattr(self, attr)
                if value is None:
                    value = build()
                    setattr(self, attr, value)
        return value  # type: ignore[no-any-return]

    @property
    def pool(self) -> ConnectionPool:
        return self._once("_pool", self._open_pool)

    def _open_pool(self) -> ConnectionPool:
        assert self.settings.database_url
        pool = create_pool(self.settings.database_url, max_size=self.settings.db_pool_size)
        pool.open(wait=False)
        return pool

    def _connect_redis(self) -> redis.Redis:
        if not self.settings.redis_url:
            raise ValueError("REDIS_URL is not set (use `missions up` for the embedded default)")
        client: redis.Redis = redis.Redis.from_url(self.settings.redis_url, health_check_interval=30,
                                                   socket_keepalive=True)
        return client

    @property
    def redis(self) -> redis.Redis:
        return self._once("_redis", self._connect_redis)

    @property
    def celery(self) -> Any:
        """A Celery app used to send messages (workers build their own, with the task bodies)."""
        return self._once("_celery", self._create_celery)

    def _create_celery(self) -> Any:
        from workers.messaging.celery_app import create_celery

        return create_celery(self.settings)

    @property
    def wakeups(self) -> WakeupPublisher:
        """The process's wake-up publisher (one background thread, started on first publish)."""
        return self._once("_wakeups", lambda: WakeupPublisher(self.redis))

    @property
    def wakeup_hub(self) -> WakeupHub:
        """The process's receiver of wake-ups for its event streams (one pub/sub connection)."""
        return self._once("_hub", lambda: WakeupHub(self.redis, self._latest_event_ids))

    def _latest_event_ids(self, run_ids: list[str]) -> dict[str, int]:
        with self.pool.connection() as conn:
            return latest_event_ids(conn, run_ids)

    @property
    def dispatcher(self) -> Any:
        return self._once("_dispatcher", self._create_dispatcher)

    def _create_dispatcher(self) -> Any:
        from workers.messaging.dispatch import Dispatcher

        return Dispatcher(self.celery, self.redis, self.wakeups)

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
