"""The ``missions`` command. Heavy modules are imported inside each command, so that the API
server's workers can apply gevent's patches before psycopg, redis or Celery are loaded."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from config import ConfigError, Settings


def load_settings(**overrides: Any) -> Settings:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(f"bad setting {exc}") from None
    changes = {k: v for k, v in overrides.items() if v is not None}
    return settings.replace(**changes) if changes else settings


def database_url(settings: Settings) -> str:
    """The configured database, else the embedded one under the data dir (started if needed)."""
    if settings.database_url:
        return settings.database_url
    from workers.embedded import start_postgres

    return start_postgres(settings.data_dir)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="missions")
def main() -> None:
    """Missions: orchestrate AI-agent workflows (API, Celery workers, beat)."""


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations (idempotent; safe from several processes at once)."""
    from workers.db import upgrade

    applied = upgrade(database_url(load_settings()))
    click.echo("\n".join(f"applied {name}" for name in applied) if applied else "database is up to date")


@main.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--project", required=True, help="Project the key belongs to (created if new).")
def keys_create(project: str) -> None:
    """Create an API key; the key is the last line of output."""
    import psycopg
    from psycopg.rows import dict_row

    from workers.db import upgrade
    from workers.projects import create_key

    if not project.strip() or len(project) > 200:
        raise click.BadParameter("a project name has 1 to 200 characters", param_hint="--project")
    url = database_url(load_settings())
    upgrade(url)
    with psycopg.connect(url, row_factory=dict_row) as conn:
        secret = create_key(conn, project.strip())
    click.echo(f"created a key for project {project.strip()!r}; it is shown only once:", err=False)
    click.echo(secret)


@main.command("api")
@click.option("--host", default=None, help="Interface to bind (MISSIONS_HOST).")
@click.option("--port", type=int, default=None, help="Port (MISSIONS_PORT).")
@click.option("--workers", "processes", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Server processes; each serves MISSIONS_API_THREADS connections with gevent.")
def api_command(host: str | None, port: int | None, processes: int) -> None:
    """Serve the HTTP API under gunicorn (gevent workers)."""
    settings = load_settings(host=host, port=port)
    if not settings.database_url or not settings.redis_url:
        raise click.ClickException(
            "DATABASE_URL and REDIS_URL must be set for `missions api`; `missions up` starts embedded ones"
        )
    from api.server import serve

    serve(settings, processes=processes)


def _require_urls(settings: Settings, command: str) -> None:
    if not settings.database_url or not settings.redis_url:
        raise click.ClickException(
            f"DATABASE_URL and REDIS_URL must be set for `missions {command}`; `missions up` starts embedded ones"
        )


@main.command("worker")
@click.option("--concurrency", type=click.IntRange(1, 1000), default=8, show_default=True,
              help="Attempts run at once by this worker (threads: agents mostly wait on I/O).")
@click.option("--pool", type=click.Choice(["threads", "prefork", "solo"]), default="threads", show_default=True)
@click.option("--name", default=None, help="Node name (default: missions-<pid>).")
def worker_command(concurrency: int, pool: str, name: str | None) -> None:
    """Run a Celery worker that executes task attempts, assessments and ticks."""
    settings = load_settings()
    _require_urls(settings, "worker")
    from workers.celery_app import create_celery
    from workers.dispatch import CONTROL_QUEUE, TASK_QUEUE
    from workers.logs import configure_logging

    configure_logging(settings)
    app = create_celery(settings, with_tasks=True)
    node = name or f"missions-{os.getpid()}"
    app.worker_main([
        "worker", "--loglevel", settings.log_level.upper(), "--pool", pool, "--concurrency", str(concurrency),
        "--queues", f"{TASK_QUEUE},{CONTROL_QUEUE}", "--hostname", f"{node}@%h",
        "--without-gossip", "--without-mingle",
    ])


@main.command("beat")
def beat_command() -> None:
    """Run Celery beat, which sends missions.tick every MISSIONS_TICK_SECONDS (several beats are safe)."""
    settings = load_settings()
    _require_urls(settings, "beat")
    import tempfile

    from workers.celery_app import create_celery
    from workers.logs import configure_logging

    configure_logging(settings)
    app = create_celery(settings)
    schedule = Path(tempfile.mkdtemp(prefix="missions-beat-")) / "schedule"
    # Beat logs every send at INFO, once a second; keep it quiet unless debugging.
    level = "DEBUG" if settings.log_level == "debug" else "WARNING"
    app.start(["beat", "--loglevel", level, "--schedule", str(schedule)])


@main.command("up")
@click.option("--port", type=int, default=None, help="API port (MISSIONS_PORT, default 8000).")
@click.option("--workers", type=click.IntRange(1, 32), default=1, show_default=True, help="Worker processes.")
@click.option("--concurrency", type=click.IntRange(1, 1000), default=8, show_default=True,
              help="Attempts per worker process.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where embedded Postgres/Redis keep data (MISSIONS_DATA_DIR, default ~/.missions).")
def up_command(port: int | None, workers: int, concurrency: int, data_dir: Path | None) -> None:
    """Start API + worker + beat (with embedded Postgres and Redis when no URLs are set)."""
    from api.up import run_up

    settings = load_settings(port=port, data_dir=data_dir.expanduser() if data_dir else None)
    sys.exit(run_up(settings, workers, concurrency))



