"""``missions up``: API, worker and beat as one supervised group, on embedded Postgres and Redis
when no URLs are configured.

What the supervisor guarantees:

- each child (``missions api|worker|beat``) runs in its own process group; stopping sends SIGTERM
  to the group and, after ``STOP_TIMEOUT_SECONDS`` (or at a second Ctrl-C), SIGKILL, so nothing a
  child started (gunicorn's workers, a prefork pool) outlives it; on Linux a child also receives
  SIGTERM should the supervisor itself die (``PR_SET_PDEATHSIG``);
- Ctrl-C or SIGTERM at any moment, also while Postgres is still starting, stops what was started;
- a child that exits on its own is reported and stops the whole group, with a non-zero status;
- the embedded Redis and Postgres stop last, after every child that used them.

``LocalStack`` is the same machinery as a library: ``missions demo`` runs its own throw-away stack
with it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import click

from config import Settings
from workers.support import instance
from workers.support.embedded import REDIS_PASSWORD_FILE

KEY_FILE = "api-key"
STOP_TIMEOUT_SECONDS = 15.0
READY_TIMEOUT_SECONDS = 60.0
WORKER_READY_TIMEOUT_SECONDS = 20.0
_PR_SET_PDEATHSIG = 1


class Stop(Exception):
    """Raised in the main thread by SIGINT or SIGTERM, so that startup unwinds and cleans up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class ChildExited(Exception):
    def __init__(self, name: str, code: int) -> None:
        super().__init__(f"{name} {describe_exit(code)}")
        self.name = name
        self.code = code


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class SignalGuard:
    """SIGINT/SIGTERM raise ``Stop`` once; while stopping, a further signal asks to hurry (SIGKILL)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.hurry = False
        self._armed = True
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalGuard:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def disarm(self) -> None:
        """From now on signals no longer raise: cleanup must not be interrupted halfway."""
        self._armed = False

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is not None:
            self.hurry = True
            return
        self.received = signum
        if self._armed:
            raise Stop(signum)


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    # The parent blocks SIGINT/SIGTERM around the fork (see ``start_child``); the mask is inherited.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass


@dataclass
class Child:
    name: str
    args: list[str]
    log: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = None


@dataclass
class Supervisor:
    env: dict[str, str]
    children: list[Child] = field(default_factory=list)
    poll_seconds: float = 0.2

    def start(self) -> None:
        for child in self.children:
            self.start_child(child)

    def start_child(self, child: Child) -> None:
        output: IO[bytes] | None = None
        if child.log is not None:
            child.log.parent.mkdir(parents=True, exist_ok=True)
            output = child._log_file = open(child.log, "ab")  # noqa: SIM115 - closed in stop()
        # A stop signal raising inside Popen would lose a started child: hold signals until it is recorded.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            child.process = subprocess.Popen(
                child.args,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output is not None else None,
                start_new_session=True,
                preexec_fn=_child_setup,  # noqa: PLW1509
            )
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    def exited(self) -> Child | None:
        """The first child that is no longer running, if any."""
        for child in self.children:
            if child.process is not None and child.process.poll() is not None:
                return child
        return None

    def watch(self) -> int:
        """Block until a child exits on its own (returns the group's exit status, never 0) or a
        signal raises ``Stop``."""
        while True:
            child = self.exited()
            if child is not None:
                assert child.process is not None
                click.echo(
                    f"missions up: {child.name} {describe_exit(child.process.returncode)}; stopping everything",
                    err=True,
                )
                return child.process.returncode if child.process.returncode > 0 else 1
            time.sleep(self.poll_seconds)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS, hurry: Callable[[], bool] = lambda: False) -> None:
        """SIGTERM every child's process group, wait, then SIGKILL the groups still alive."""
        running = [c for c in self.children if c.process is not None]
        for child in running:
            _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in running:
            assert child.process is not None
            while child.process.poll() is None and time.monotonic() < deadline and not hurry():
                time.sleep(0.05)
            if child.process.poll() is None:
                click.echo(f"missions up: {child.name} did not stop in time; killing it", err=True)
            # Also reaps what the child left in its group (a gunicorn worker, a pool process).
            _signal_group(child, signal.SIGKILL)
            child.process.wait()
            if child._log_file is not None:
                child._log_file.close()
                child._log_file = None


def _signal_group(child: Child, signum: int) -> None:
    assert child.process is not None
    try:
        os.killpg(child.process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def default_key(settings: Settings, database_url: str) -> str:
    """The ``default`` project's key, created on first start and kept (0600) in the data dir."""
    from workers.store.db import connect
    from workers.store.projects import create_key, project_for_key

    path = settings.data_dir / KEY_FILE
    with connect(database_url) as conn:
        if path.exists():
            secret = path.read_text().strip()
            if project_for_key(conn, secret):
                return secret
        secret = create_key(conn, "default")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


def command(role: str) -> list[str]:
    return [sys.executable, "-c", "from api.cli import main; main()", role]


def local_url(settings: Settings) -> str:
    """Where a client on this machine reaches the API (a wildcard bind is reached on loopback)."""
    host = settings.host if settings.host not in ("", "0.0.0.0", "::", "[::]") else "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


class LocalStack:
    """Embedded services (when no URLs are set), migrations, the ``default`` key and the
    api/worker/beat children, started in that order and stopped in the reverse one."""

    def __init__(
        self,
        settings: Settings,
        *,
        workers: int = 1,
        concurrency: int = 8,
        log_dir: Path | None = None,
        extra_env: dict[str, str] | None = None,
        stop_timeout: float = STOP_TIMEOUT_SECONDS,
    ) -> None:
        self.settings = settings
        self.stop_timeout = stop_timeout
        self.workers = workers
        self.concurrency = concurrency
        self.log_dir = log_dir
        self.extra_env = dict(extra_env or {})
        self.database_url = settings.database_url or ""
        self.redis_url = settings.redis_url or ""
        self.key = ""
        self.supervisor: Supervisor | None = None
        self._redis: Any = None
        self._postgres_started = False
        self._ownership: instance.Ownership | None = None

    @property
    def url(self) -> str:
        return local_url(self.settings)

    @property
    def dashboard_url(self) -> str:
        return f"{self.url}/ui/"

    def start(self) -> None:
        """Take the data dir (``instance.DataDirBusy`` when another ``missions up`` has it), start
        what is missing, and the children."""
        from workers.store.db import upgrade
        from workers.support.embedded import redis_password, start_redis
        from workers.wiring import start_embedded_postgres as start_postgres

        self._ownership = instance.acquire(self.settings.data_dir)
        self.publish("starting")
        if not self.database_url:
            self._postgres_started = True  # set first: an interrupted start must still be stopped
            self.database_url = start_postgres(self.settings.data_dir)
        if not self.redis_url:
            self._redis = start_redis(self.settings.data_dir, password=redis_password(self.settings.data_dir))
            self.redis_url = self._redis.url
        upgrade(self.database_url)
        self.key = default_key(self.settings, self.database_url)
        self.publish("starting")
        env = {
            **os.environ,
            **self.extra_env,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "MISSIONS_DATA_DIR": str(self.settings.data_dir),
            "MISSIONS_HOST": self.settings.host,
            "MISSIONS_PORT": str(self.settings.port),
        }
        supervisor = Supervisor(env)
        supervisor.children.append(Child("api", command("api"), self._log("api")))
        for n in range(self.workers):
            supervisor.children.append(
                Child(
                    f"worker-{n + 1}",
                    [*command("worker"), "--concurrency", str(self.concurrency), "--name", f"up{n + 1}-{os.getpid()}"],
                    self._log(f"worker-{n + 1}"),
                )
            )
        supervisor.children.append(Child("beat", command("beat"), self._log("beat")))
        self.supervisor = supervisor
        supervisor.start()

    def publish(self, state: str) -> None:
        """What ``missions status``, the client commands and ``celery -A workers.wiring`` read."""
        assert self._ownership is not None
        self._ownership.write(
            {
                "state": state,
                "url": self.url,
                "dashboardUrl": self.dashboard_url,
                "dataDir": str(self.settings.data_dir),
                "databaseUrl": self.database_url,
                "databaseEmbedded": self._postgres_started,
                "redisUrl": self.redis_url,
                "redisEmbedded": self._redis is not None,
                "workers": self.workers,
                "concurrency": self.concurrency,
            }
        )

    def _log(self, name: str) -> Path | None:
        return self.log_dir / f"{name}.log" if self.log_dir is not None else None

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Until /readyz answers 200 and a worker answers a ping; ``ChildExited`` if a child dies."""
        assert self.supervisor is not None
        deadline = time.monotonic() + timeout
        while not self._ready():
            self._check_children()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API did not become ready at {self.url} within {timeout:g} s")
            time.sleep(0.2)
        self._wait_for_worker(min(WORKER_READY_TIMEOUT_SECONDS, max(1.0, deadline - time.monotonic())))

    def _check_children(self) -> None:
        assert self.supervisor is not None
        child = self.supervisor.exited()
        if child is not None:
            assert child.process is not None
            raise ChildExited(child.name, child.process.returncode)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:  # noqa: S310 - our URL
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _wait_for_worker(self, timeout: float) -> None:
        """A worker that answers a ping consumes the queues; until then messages simply wait."""
        from workers.messaging.celery_app import create_celery

        app = create_celery(self.settings.replace(redis_url=self.redis_url, database_url=self.database_url))
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                self._check_children()
                try:
                    if app.control.ping(timeout=0.5):
                        return
                except Exception:  # noqa: BLE001 - the broker may still be settling; readiness is best effort
                    time.sleep(0.2)
        finally:
            app.close()

    def log_tail(self, lines: int = 30) -> str:
        if self.log_dir is None:
            return ""
        out = []
        for path in sorted(self.log_dir.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    def close(self, hurry: Callable[[], bool] = lambda: False) -> None:
        """Stop the children, then the embedded Redis and Postgres this stack started."""
        from workers.support.embedded import stop_postgres

        if self.supervisor is not None:
            self.supervisor.stop(self.stop_timeout, hurry=hurry)
        if self._redis is not None:
            self._redis.stop()
        if self._postgres_started:
            stop_postgres(self.settings.data_dir)
        if self._ownership is not None:
            self._ownership.release()
            self._ownership = None


@contextmanager
def running_stack(stack: LocalStack, guard: SignalGuard, label: str = "missions up") -> Iterator[LocalStack]:
    """Start ``stack`` and yield it once ready; it is closed on exit, whatever happened."""
    try:
        stack.start()
        stack.wait_ready()
        stack.publish("ready")
        yield stack
    finally:
        guard.disarm()
        if guard.received is not None:
            click.echo(
                f"{label}: {signal.Signals(guard.received).name} received; stopping (again to kill at once)", err=True
            )
        stack.close(hurry=lambda: guard.hurry)


def run_up(settings: Settings, workers: int, concurrency: int) -> int:
    services = (
        "Postgres: "
        + ("DATABASE_URL" if settings.database_url else f"embedded ({settings.data_dir / 'pg'})")
        + "; Redis: "
        + ("REDIS_URL" if settings.redis_url else f"embedded ({settings.data_dir / 'redis'})")
    )
    with SignalGuard() as guard:
        stack = LocalStack(settings, workers=workers, concurrency=concurrency)
        try:
            click.echo(f"missions up: starting ({services})", err=True)
            with running_stack(stack, guard):
                assert stack.supervisor is not None
                url = stack.url
                click.echo(f"Missions is ready at {url}  (data: {settings.data_dir})")
                click.echo(f"  Dashboard: {url}/ui/  (sign in with the API key below)")
                click.echo(f"  {services}")
                click.echo(
                    f"  Redis at {instance.redact_url(stack.redis_url)}"
                    + (f" (password in {settings.data_dir / REDIS_PASSWORD_FILE})" if not settings.redis_url else "")
                    + "; what runs where: missions status"
                )
                click.echo(f"  API docs: {url}/docs   metrics: {url}/metrics")
                click.echo(f"  try: curl -H 'Authorization: Bearer {stack.key}' {url}/v1/missions")
                click.echo(f"       missions demo --url {url} --key {stack.key}")
                click.echo(f"API key (project 'default', kept in {settings.data_dir / KEY_FILE}):\n{stack.key}")
                return stack.supervisor.watch()
        except Stop:
            return 0
        except instance.DataDirBusy as exc:
            click.echo(f"missions up: {exc}", err=True)
            return 1
        except ChildExited as exc:
            click.echo(f"missions up: {exc} while starting; stopping everything", err=True)
            return exc.code if exc.code > 0 else 1
        except TimeoutError as exc:
            click.echo(f"missions up: {exc}; stopping everything", err=True)
            return 1
        finally:
            if guard.received is not None:
                click.echo("missions up: stopped", err=True)


__all__ = ["LocalStack", "SignalGuard", "Stop", "run_up", "running_stack"]
