"""``missions up``: API, worker and beat as one supervised group, on embedded Postgres and Redis
when no URLs are configured.

The supervisor starts each child as ``missions <role>`` with the resolved URLs in its environment,
forwards Ctrl-C/SIGTERM to all of them, and stops the whole group with a non-zero exit as soon as
any child dies on its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import click

from config import Settings

KEY_FILE = "api-key"


@dataclass
class Child:
    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None


@dataclass
class Supervisor:
    env: dict[str, str]
    children: list[Child] = field(default_factory=list)
    stopping: bool = False

    def start(self) -> None:
        for child in self.children:
            child.process = subprocess.Popen(child.args, env=self.env, start_new_session=False)

    def stop(self, timeout: float = 15.0) -> None:
        self.stopping = True
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                click.echo(f"{child.name} did not stop in time; killing it", err=True)
                child.process.kill()
                child.process.wait()

    def watch(self) -> int:
        """Block until a signal or a child's death; returns the exit status for the group."""
        received: list[int] = []

        def on_signal(signum: int, _frame: object) -> None:
            received.append(signum)

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while not received:
            for child in self.children:
                assert child.process is not None
                code = child.process.poll()
                if code is not None:
                    click.echo(f"missions up: {child.name} exited with status {code}; stopping everything", err=True)
                    self.stop()
                    return code or 1
            time.sleep(0.2)
        click.echo("missions up: stopping...", err=True)
        self.stop()
        return 0


def resolve_services(settings: Settings) -> tuple[str, str]:
    """The configured URLs, else embedded Postgres/Redis under the data dir (kept across starts)."""
    from workers.embedded import start_postgres, start_redis

    database_url = settings.database_url or start_postgres(settings.data_dir)
    redis_url = settings.redis_url
    if not redis_url:
        redis_url = start_redis(settings.data_dir).url
    return database_url, redis_url


def default_key(settings: Settings, database_url: str) -> str:
    """The ``default`` project's key, created on first start and kept (0600) in the data dir."""
    import psycopg
    from psycopg.rows import dict_row

    from workers.projects import create_key, project_for_key

    path = settings.data_dir / KEY_FILE
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
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


def run_up(settings: Settings, workers: int, concurrency: int) -> int:
    from workers.db import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database_url, redis_url = resolve_services(settings)
    upgrade(database_url)
    key = default_key(settings, database_url)
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "MISSIONS_DATA_DIR": str(settings.data_dir), "MISSIONS_HOST": settings.host,
           "MISSIONS_PORT": str(settings.port)}
    supervisor = Supervisor(env)
    supervisor.children.append(Child("api", command("api")))
    for n in range(workers):
        supervisor.children.append(Child(f"worker-{n + 1}", [*command("worker"), "--concurrency", str(concurrency),
                                                                 "--name", f"up{n + 1}"]))
    supervisor.children.append(Child("beat", command("beat")))
    supervisor.start()
    url = f"http://{settings.host}:{settings.port}"
    click.echo(f"Missions is starting at {url}  (data: {settings.data_dir})")
    click.echo(f"  Postgres: {'embedded' if not settings.database_url else 'DATABASE_URL'}; "
               f"Redis: {'embedded' if not settings.redis_url else 'REDIS_URL'}")
    click.echo(f"  try: curl -H 'Authorization: Bearer {key}' {url}/v1/missions")
    click.echo(f"API key (project 'default'):\n{key}")
    return supervisor.watch()


__all__ = ["run_up"]
