"""Migrations: from an empty database they build the schema the code queries, once, even when
several processes run them at the same time."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from tests.conftest import with_database
from workers.store.db import current_version, migrations, upgrade

# Every table the code reads or writes.
TABLES = {
    "projects",
    "api_keys",
    "agents",
    "missions",
    "tasks",
    "runs",
    "attempts",
    "timers",
    "events",
    "schema_migrations",
}

COLUMNS = """
SELECT table_name, column_name, data_type, is_nullable, column_default
  FROM information_schema.columns
 WHERE table_schema = 'public'
 ORDER BY table_name, column_name
"""

INDEXES = "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2"


@pytest.fixture
def empty_database(postgres_server_url: str) -> Iterator[Callable[[], str]]:
    """Makes empty databases (no tables at all) and drops them afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"missions_empty_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        made.append(name)
        return with_database(postgres_server_url, name)

    yield make
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def fetch(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def tables(url: str) -> set[str]:
    rows = fetch(url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    return {str(row[0]) for row in rows}


def recorded_versions(url: str) -> list[int]:
    return [int(row[0]) for row in fetch(url, "SELECT version FROM schema_migrations ORDER BY version")]  # type: ignore[call-overload]


def test_upgrading_an_empty_database_applies_every_migration_once(empty_database: Callable[[], str]) -> None:
    url = empty_database()
    assert tables(url) == set()

    assert upgrade(url) == [m.name for m in migrations()]
    assert upgrade(url) == []

    assert recorded_versions(url) == [m.version for m in migrations()]
    with psycopg.connect(url) as conn:
        assert current_version(conn) == len(migrations())


def test_an_empty_database_is_at_version_zero(empty_database: Callable[[], str]) -> None:
    with psycopg.connect(empty_database()) as conn:
        assert current_version(conn) == 0


def test_every_table_the_code_queries_exists_after_upgrade(empty_database: Callable[[], str]) -> None:
    url = empty_database()
    upgrade(url)
    assert tables(url) >= TABLES


def test_the_migrated_schema_matches_the_one_the_tests_run_against(
    empty_database: Callable[[], str], postgres_server_url: str, template_database: str
) -> None:
    url = empty_database()
    upgrade(url)
    template = with_database(postgres_server_url, template_database)
    assert fetch(url, COLUMNS) == fetch(template, COLUMNS)
    assert fetch(url, INDEXES) == fetch(template, INDEXES)
    assert tables(url) == tables(template)
    assert tables(url) >= TABLES


def test_migrations_are_numbered_without_gaps_and_named_by_convention() -> None:
    found = migrations()
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert all(m.name.startswith(f"{m.version:04d}_") and m.name.endswith(".sql") for m in found)


def test_concurrent_upgrades_apply_each_migration_exactly_once(empty_database: Callable[[], str]) -> None:
    url = empty_database()
    start = threading.Barrier(4)
    results: list[list[str]] = []
    errors: list[Exception] = []
    lock = threading.Lock()

    def run() -> None:
        try:
            start.wait(timeout=30)
            applied = upgrade(url)
            with lock:
                results.append(applied)
        except Exception as exc:  # noqa: BLE001 - reported below, with every thread's outcome
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not any(t.is_alive() for t in threads), "an upgrade hung"
    assert errors == []
    assert len(results) == 4
    assert sorted(name for applied in results for name in applied) == sorted(m.name for m in migrations())
    assert recorded_versions(url) == [m.version for m in migrations()]
    assert tables(url) >= TABLES
