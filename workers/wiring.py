"""The composition root: the one place that builds a process's connections and the objects that use
them. Nothing else constructs a pool, a Redis client, the Celery app or a dispatcher.

Everything is built on first use, once however many threads ask, so importing this module or
creating ``Services`` connects to nothing:

- ``db``: the Postgres pool (``workers.store.db.Database``);
- ``redis``: one Redis client (broker side channels: cancel flags, wake-ups, metrics);
- ``celery``: the Celery app used to send messages (a worker's app is ``worker_app``);
- ``dispatcher``: the after-commit sender (``workers.messaging.dispatch.Dispatcher``);
- ``coordinator``: units of work on ``db`` that send through ``dispatcher``;
- ``wakeups`` / ``wakeup_hub``: the wake-up publisher and the SSE streams' shared subscriber;
- ``limits_redis``: a Redis client with short timeouts for the per-request checks (the rate
  limiter's storage, ``stream_slots``: open event streams per key);
- ``executor(worker)``: what runs attempts on a worker;
- ``deliverer``: what sends webhook deliveries on a worker.

It is also the ``-A`` target of Celery's own tools: ``celery -A workers.wiring inspect ping`` (and
``inspect active``, ``control``, ``events``, ``flower``, even ``worker``) finds the module attribute
``app`` (or ``celery``): the worker's app with its tasks, built on first access only (a module
``__getattr__``), from the same settings as ``missions worker``. When ``DATABASE_URL`` or
``REDIS_URL`` is unset it takes them from the ``missions up`` running on the data dir
(``workers.support.instance``), so the tools work against it as they are.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import redis
from celery import Celery
from celery.signals import worker_shutting_down

from config import ConfigError, Settings
from workers.coordination.advance import Coordinator
from workers.coordination.tick import TickReport, tick
from workers.execution.executor import Executor
from workers.execution.providers import Providers
from workers.execution.webhooks import Deliverer
from workers.messaging.celery_app import create_celery, instrument_for_tracing, register_tasks
from workers.messaging.dispatch import Dispatcher
from workers.messaging.streams import StreamSlots
from workers.messaging.wakeups import WakeupHub, WakeupPublisher
from workers.store.db import Connection, Database, ensure_database, open_database
from workers.store.events import latest_event_ids
from workers.support import embedded, instance, metrics, tracing
from workers.support.clock import utcnow

T = TypeVar("T")

LIMITS_REDIS_TIMEOUT = 0.5  # seconds a per-request Redis check may wait before it fails open


class Services:
    """The connections of one process and what is built on them (see the module docstring)."""

    def __init__(self, settings: Settings, *, celery: Celery | None = None) -> None:
        """``celery``: the app to send with (a worker's own app), else one is built on first use."""
        if not settings.database_url:
            raise ValueError("DATABASE_URL is not set (use `missions up` for the embedded default)")
        self.settings = settings
        self._lock = threading.RLock()
        self._db: Database | None = None
        self._redis: redis.Redis | None = None
        self._celery: Celery | None = celery
        self._wakeups: WakeupPublisher | None = None
        self._hub: WakeupHub | None = None
        self._dispatcher: Dispatcher | None = None
        self._coordinator: Coordinator | None = None
        self._deliverer: Deliverer | None = None
        self._limits_redis: redis.Redis | None = None
        self._stream_slots: StreamSlots | None = None

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
    def db(self) -> Database:
        assert self.settings.database_url
        url = self.settings.database_url
        return self._once("_db", lambda: open_database(url, max_size=self.settings.db_pool_size))

    def _connect_redis(self) -> redis.Redis:
        if not self.settings.redis_url:
            raise ValueError("REDIS_URL is not set (use `missions up` for the embedded default)")
        # Timeouts: a Redis that accepts connections but does not answer must not hold a request (or a
        # step's after-commit sends) forever; every use of this client is a short command.
        client: redis.Redis = redis.Redis.from_url(
            self.settings.redis_url,
            health_check_interval=30,
            socket_keepalive=True,
            socket_connect_timeout=5,
            socket_timeout=10,
        )
        return client

    @property
    def limits_redis(self) -> redis.Redis:
        """A client for checks every request makes (rate limits, stream counts): a Redis that does not
        answer costs a request at most ``LIMITS_REDIS_TIMEOUT`` before the check gives up (fails open)."""

        def connect() -> redis.Redis:
            if not self.settings.redis_url:
                raise ValueError("REDIS_URL is not set (use `missions up` for the embedded default)")
            client: redis.Redis = redis.Redis.from_url(
                self.settings.redis_url,
                socket_connect_timeout=LIMITS_REDIS_TIMEOUT,
                socket_timeout=LIMITS_REDIS_TIMEOUT,
                health_check_interval=30,
            )
            return client

        return self._once("_limits_redis", connect)

    @property
    def redis(self) -> redis.Redis:
        return self._once("_redis", self._connect_redis)

    @property
    def stream_slots(self) -> StreamSlots:
        """Open event streams per API key, across processes; a slot lives while its stream refreshes it."""
        ttl = max(30.0, 4 * self.settings.sse_heartbeat_seconds)  # (a stream sends at least every heartbeat)
        return self._once("_stream_slots", lambda: StreamSlots(self.limits_redis, ttl))

    @property
    def celery(self) -> Celery:
        """A Celery app used to send messages (a worker builds its own, with the task bodies)."""
        return self._once("_celery", lambda: create_celery(self.settings))

    @property
    def wakeups(self) -> WakeupPublisher:
        """The process's wake-up publisher (one background thread, started on first publish)."""
        return self._once("_wakeups", lambda: WakeupPublisher(self.redis))

    @property
    def wakeup_hub(self) -> WakeupHub:
        """The process's receiver of wake-ups for its event streams (one pub/sub connection)."""
        return self._once("_hub", lambda: WakeupHub(self.redis, self._latest_event_ids))

    def release_streams(self) -> None:
        """End this process's event streams now (it is stopping), if it has any."""
        if self._hub is not None:
            self._hub.release_all()

    def _latest_event_ids(self, run_ids: list[str]) -> dict[str, int]:
        with self.db.transaction() as conn:
            return latest_event_ids(conn, run_ids)

    @property
    def dispatcher(self) -> Dispatcher:
        return self._once(
            "_dispatcher", lambda: Dispatcher(self.celery, self.redis, self.wakeups, self.settings.batch_attempts)
        )

    @property
    def coordinator(self) -> Coordinator:
        return self._once("_coordinator", lambda: Coordinator(self.db, self.dispatcher))

    @property
    def deliverer(self) -> Deliverer:
        """What sends webhook deliveries (one attempt per call)."""
        return self._once("_deliverer", lambda: Deliverer(self.settings, self.db))

    def executor(self, worker: str, providers: Providers | None = None) -> Executor:
        """An executor for the worker called ``worker`` (one per process)."""
        dispatcher = self.dispatcher
        return Executor(
            self.settings,
            self.db,
            self.coordinator,
            dispatcher.cancel_flags,
            worker,
            providers,
            send_each=lambda run_id, items: dispatcher.send_attempts(run_id, items, per_message=1),
        )

    def tick(self) -> TickReport:
        return tick(self.coordinator, self.dispatcher, self.settings, utcnow())

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A pooled connection inside one transaction (reads, and writes that change no run)."""
        with self.db.transaction() as conn:
            yield conn

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A pooled connection where each statement commits on its own."""
        with self.db.autocommit() as conn:
            yield conn

    def close(self) -> None:
        self._deliverer = None
        self._coordinator = None
        self._dispatcher = None
        if self._hub is not None:
            self._hub.close()
            self._hub = None
        if self._wakeups is not None:
            self._wakeups.flush(2.0)
            self._wakeups = None
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None
        self._stream_slots = None
        if self._limits_redis is not None:
            self._limits_redis.close()
            self._limits_redis = None
        if self._celery is not None:
            self._celery.close()
            self._celery = None


class _WorkerHandlers:
    """The bodies of the worker's Celery tasks: one executor per process, named after the first
    request's worker."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._executor: Executor | None = None
        self._lock = threading.Lock()

    def _executor_for(self, hostname: str | None) -> Executor:
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = self.services.executor(hostname or socket.gethostname())
        return self._executor

    def run_attempt(self, run_id: str, task_id: str, attempt: int, hostname: str | None) -> object:
        return self._executor_for(hostname).run_attempt(run_id, task_id, attempt)

    def run_attempts(self, run_id: str, items: list[tuple[str, int]], hostname: str | None) -> object:
        return self._executor_for(hostname).run_attempts(run_id, items)

    def shutting_down(self, **_: object) -> None:
        """Celery's ``worker_shutting_down`` (sent in the worker's main process: the threads and solo
        pools' attempts run there): no more eager hand-offs, and the attempts of batch messages not
        started yet go to the broker, so a warm shutdown waits only for the attempts running. A
        prefork child does not get it; its windows (``MISSIONS_EAGER_HANDOFF_SECONDS``,
        ``MISSIONS_BATCH_RELEASE_SECONDS``) bound what it takes and holds."""
        if self._executor is not None:
            self._executor.stop_handing_off()

    def assess(self, run_id: str, task_id: str, attempt: int, hostname: str | None) -> object:
        return self._executor_for(hostname).assess(run_id, task_id, attempt)

    def deliver_webhook(self, delivery_id: str) -> object:
        return self.services.deliverer.deliver(delivery_id)

    def tick(self) -> object:
        try:
            report = self.services.tick()
        except Exception:
            metrics.count_tick(False)  # (/metrics: missions_ticks_total{outcome="failed"})
            raise
        metrics.count_tick(True)
        return vars(report)


def worker_app(settings: Settings) -> tuple[Celery, Services]:
    """A worker's Celery app with the task bodies, and the services they run on. Coordinator step
    counters go to the services' Redis (``/metrics`` reads them)."""
    app = create_celery(settings)
    services = Services(settings, celery=app)  # the worker's own app sends what its steps start
    handlers = _WorkerHandlers(services)
    register_tasks(app, handlers)
    worker_shutting_down.connect(handlers.shutting_down)  # (a weak reference: gone with the app)
    metrics.configure(lambda: services.redis)
    return app, services


def configure_tracing(role: str) -> bool:
    """Traces for this process when the ``OTEL_*`` environment asks for them (``role``: ``api``,
    ``worker``): the SDK and the psycopg and httpx instrumentations (``workers.support.tracing``),
    then Celery's and Redis'. Call it at the process's start, before any connection is opened."""
    if not tracing.configure(role):
        return False
    instrument_for_tracing()
    return True


def start_embedded_postgres(data_dir: Path, database: str = embedded.DATABASE_NAME) -> str:
    """Start (or reuse) the embedded Postgres under ``data_dir`` and return a URL for ``database``."""
    return embedded.start_postgres(data_dir, ensure_database, database)


def tool_settings() -> Settings:
    """The settings from the environment; ``DATABASE_URL``/``REDIS_URL`` when unset come from the
    ``missions up`` that owns the data dir, if one runs."""
    settings = Settings.from_env()
    if settings.database_url and settings.redis_url:
        return settings
    running = instance.running(settings.data_dir) or {}
    return settings.replace(
        database_url=settings.database_url or running.get("databaseUrl") or None,
        redis_url=settings.redis_url or running.get("redisUrl") or None,
    )


_tool_app: Celery | None = None
_tool_lock = threading.Lock()


def tool_app() -> Celery:
    """The app ``celery -A workers.wiring`` uses: the worker's, built once from ``tool_settings``."""
    global _tool_app
    with _tool_lock:
        if _tool_app is None:
            settings = tool_settings()
            if not settings.redis_url or not settings.database_url:
                raise ConfigError(
                    "DATABASE_URL" if not settings.database_url else "REDIS_URL",
                    "not set: set DATABASE_URL and REDIS_URL as for `missions worker`, or start `missions up` "
                    f"on the data dir {settings.data_dir} (MISSIONS_DATA_DIR)",
                )
            _tool_app, _services = worker_app(settings)
        return _tool_app


def __getattr__(name: str) -> Celery:
    # ``celery -A workers.wiring`` looks for ``app``, then ``celery``: built only when asked for.
    if name in ("app", "celery"):
        return tool_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
