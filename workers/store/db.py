"""Postgres access: connection pools and forward-only migrations.

Migrations are the numbered ``.sql`` files in ``workers/store/migrations``. ``upgrade`` applies the ones
not yet recorded in ``schema_migrations``, each in its own transaction, under a transaction-level
advisory lock so that several processes may run it at once: the first applies, the others wait
and then find nothing left to do.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolClosed

from workers.store.queries import query
from workers.support.errors import Unavailable

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

log = logging.getLogger(__name__)

# How long the current context (an API request: ``Database.waiting_at_most``) waits for a pooled
# connection; None: the pool's own timeout (30 s), which workers keep.
_POOL_WAIT: ContextVar[float | None] = ContextVar("missions_pool_wait", default=None)
# Server errors that mean "this server cannot serve you now" rather than "your statement failed":
# admin_shutdown, crash_shutdown, cannot_connect_now (starting up or shutting down), too_many_connections.
_UNREACHABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
# After a lost connection, check the pool's idle connections (they likely died with it) at most this often.
_PURGE_INTERVAL_SECONDS = 5.0


class DatabaseUnavailable(Unavailable, psycopg.OperationalError):
    """Postgres cannot be reached: the API's 503 (``Unavailable``), and still the
    ``psycopg.OperationalError`` it was, with the same ``sqlstate`` (the original is its
    ``__cause__``), so that code deciding whether to try again (``is_transient``) sees no change."""

    def __init__(self, cause: psycopg.OperationalError) -> None:
        # (What failed, with hosts and ports, is for the server's log, not for the client.)
        super().__init__("the database is unavailable; retry later", {"service": "postgres"})
        self.sqlstate = cause.sqlstate


def _lost(exc: psycopg.OperationalError, conn: Connection | None) -> bool:
    """Whether ``exc`` says Postgres cannot be reached (no connection, the connection broke, the
    server is going away or full), as opposed to an error of the statement (a lock or statement
    timeout, a serialization failure, a deadlock: those are the caller's to handle)."""
    if isinstance(exc, PoolClosed):
        return False  # this process is stopping: not Postgres's doing
    if conn is None or conn.broken or conn.closed:
        return True  # no connection was had (PoolTimeout, a failed connect), or it is gone
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _UNREACHABLE_SQLSTATES


class Database:
    """The process's Postgres pool, handed out as connections inside one transaction or in
    autocommit mode. The only way code outside ``workers.store`` reaches Postgres.

    Postgres being unreachable — no connection within the wait (``psycopg_pool.PoolTimeout``), a
    connection that broke while in use, a server shutting down or restarting — is raised as
    ``DatabaseUnavailable`` (a ``workers.support.errors.Unavailable``, the API's 503) from every
    context manager below. Any other error passes through unchanged."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self._purged_at = float("-inf")
        self._purge_lock = threading.Lock()

    @staticmethod
    @contextmanager
    def waiting_at_most(seconds: float) -> Iterator[None]:
        """Inside the block, the current context (thread, greenlet, request) waits at most
        ``seconds`` for a pooled connection before ``Unavailable``, instead of the pool's 30 s."""
        token = _POOL_WAIT.set(seconds)
        try:
            yield
        finally:
            _POOL_WAIT.reset(token)

    @contextmanager
    def _checkout(self, timeout: float | None) -> Iterator[Connection]:
        """A pooled connection (committed on success, rolled back on error); Postgres unreachable
        on checkout, on use or on commit becomes ``Unavailable``."""
        conn: Connection | None = None
        wait = timeout if timeout is not None else _POOL_WAIT.get()
        try:
            with self.pool.connection(timeout=wait) as conn:
                yield conn
        except psycopg.OperationalError as exc:
            if isinstance(exc, DatabaseUnavailable) or not _lost(exc, conn):
                raise  # (translated already, by a block inside this one)
            if conn is not None:
                self._purge_soon()
            raise DatabaseUnavailable(exc) from exc

    def _purge_soon(self) -> None:
        """In the background, drop the pool's idle connections that broke too (a restarted server
        broke them all), so that the requests after this one get working ones."""
        now = time.monotonic()
        with self._purge_lock:
            if now - self._purged_at < _PURGE_INTERVAL_SECONDS:
                return
            self._purged_at = now
        threading.Thread(target=self._purge, name="db-pool-check", daemon=True).start()

    def _purge(self) -> None:
        try:
            self.pool.check()
        except Exception:  # best effort: a broken connection is also dropped when next used
            log.debug("checking the pool's connections failed", exc_info=True)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A pooled connection inside one transaction: committed on success, rolled back on error."""
        with self._checkout(None) as conn:
            yield conn

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A pooled connection where each statement commits on its own: one round trip for a
        single-statement write (no BEGIN, no COMMIT)."""
        with self._checkout(None) as conn:
            conn.autocommit = True
            try:
                yield conn
            finally:
                if not conn.closed:
                    conn.autocommit = False

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[Connection]:
        """A pooled connection (committed on success), waiting at most ``timeout`` seconds for one."""
        with self._checkout(timeout) as conn:
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
