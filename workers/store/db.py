"""Postgres access: connection pools and forward-only migrations.

Migrations are the numbered ``.sql`` files in ``workers/store/migrations``. ``upgrade`` applies the ones
not yet recorded in ``schema_migrations``, each in its own transaction, under a transaction-level
advisory lock so that several processes may run it at once: the first applies, the others wait
and then find nothing left to do.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from workers.store.queries import query

# An arbitrary constant: the advisory lock key that serialises migration runs.
_MIGRATION_LOCK = 0x6D697373696F6E73 & 0x7FFFFFFFFFFFFFFF
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

LOCK_MIGRATIONS = query("lock_migrations")
CREATE_SCHEMA_MIGRATIONS = query("create_schema_migrations")
MIGRATION_APPLIED = query("migration_applied")
RECORD_MIGRATION = query("record_migration")
SCHEMA_MIGRATIONS_EXISTS = query("schema_migrations_exists")
SCHEMA_VERSION = query("schema_version")
PING = query("ping")
DATABASE_EXISTS = query("database_exists")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped with the package, in order."""
    found = []
    for entry in resources.files("workers.store").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration numbers must run 1, 2, 3... without gaps, found {versions}")
    return found


def upgrade(database_url: str) -> list[str]:
    """Apply pending migrations; returns the names applied (empty when up to date)."""
    applied: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        for migration in migrations():
            with conn.transaction():
                conn.execute(LOCK_MIGRATIONS, {"key": _MIGRATION_LOCK})
                conn.execute(CREATE_SCHEMA_MIGRATIONS)
                done = conn.execute(MIGRATION_APPLIED, {"version": migration.version}).fetchone()
                if done:
                    continue
                conn.execute(migration.sql)
                conn.execute(RECORD_MIGRATION, {"version": migration.version, "name": migration.name})
                applied.append(migration.name)
    return applied


def current_version(conn: psycopg.Connection) -> int:
    row = conn.execute(SCHEMA_MIGRATIONS_EXISTS).fetchone()
    if not row or not row[0]:
        return 0
    version = conn.execute(SCHEMA_VERSION).fetchone()
    return int(version[0]) if version else 0


def create_pool(database_url: str, *, max_size: int = 10, min_size: int = 1, name: str = "missions") -> ConnectionPool:
    """A pool of dict-row connections; opened lazily by the caller (``pool.open()``)."""
    return ConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"row_factory": dict_row},
        name=name,
        open=False,
        # No check on every checkout (a round trip each time); broken connections are replaced when
        # they fail, and idle ones are recycled.
        max_idle=300,
        reconnect_timeout=60,
    )


Connection = psycopg.Connection[Any]


class Database:
    """The process's Postgres pool, handed out as connections inside one transaction or in
    autocommit mode. The only way code outside ``workers.store`` reaches Postgres."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A pooled connection inside one transaction: committed on success, rolled back on error."""
        with self.pool.connection() as conn:
            yield conn

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A pooled connection where each statement commits on its own: one round trip for a
        single-statement write (no BEGIN, no COMMIT)."""
        with self.pool.connection() as conn:
            conn.autocommit = True
            try:
                yield conn
            finally:
                conn.autocommit = False

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[Connection]:
        """A pooled connection (committed on success), waiting at most ``timeout`` seconds for one."""
        with self.pool.connection(timeout=timeout) as conn:
            yield conn

    def ping(self, timeout: float) -> None:
        """Raise unless Postgres answers within ``timeout`` seconds."""
        with self.pool.connection(timeout=timeout) as conn:
            conn.execute(PING)

    def close(self) -> None:
        self.pool.close()


def open_database(database_url: str, *, max_size: int) -> Database:
    """A ``Database`` on a new pool, opening in the background (the first use waits for it)."""
    pool = create_pool(database_url, max_size=max_size)
    pool.open(wait=False)
    return Database(pool)


def ensure_database(admin_url: str, database: str) -> None:
    """Create ``database`` on the server of ``admin_url`` unless it exists (for the embedded server)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(DATABASE_EXISTS, {"name": database}).fetchone()
        if not exists:
            # Not a named query: a database name is an identifier, which cannot be a parameter, so the
            # statement is composed here, quoting the name with psycopg.sql.Identifier.
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


@contextmanager
def connect(database_url: str) -> Iterator[Connection]:
    """One connection of its own (dict rows) in a transaction, for commands that run once."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        yield conn


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a database failure that may pass when the same work is tried again
    (Postgres restarting, a network blip, no pooled connection in time, a deadlock), rather than an
    error about the statement or its data, which would fail again. Lets code outside
    ``workers.store`` decide to retry without importing psycopg. A closed pool (the process is
    stopping) is not transient."""
    from psycopg_pool import PoolClosed, PoolTimeout

    if isinstance(exc, PoolClosed):
        return False
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    if exc.sqlstate is None:  # failed on the client's side: the connection broke, closed or timed out
        return True
    # SQLSTATE classes that say nothing about the statement: connection exception (08), transaction
    # rolled back by Postgres (40: deadlock, serialization failure), insufficient resources (53),
    # operator intervention (57: shutdown, restart, cannot connect now, cancel), system error (58).
    return exc.sqlstate[:2] in {"08", "40", "53", "57", "58"}
