"""The ``missions`` command. Heavy modules are imported inside each command, so that the API
server's workers can apply gevent's patches before psycopg, redis or Celery are loaded."""

from __future__ import annotations

import sys
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


def run() -> None:  # pragma: no cover - console entry point helper
    sys.exit(main())



