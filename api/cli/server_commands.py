"""Server commands: ``db upgrade``, ``keys create``, ``api``, ``worker``, ``beat`` and ``up``. Heavy
modules are imported inside each command, so that the API server's workers can apply gevent's
patches before psycopg, redis or Celery are loaded."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from api.cli.common import database_url, load_settings
from config import ConfigError, Settings


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations (idempotent; safe from several processes at once)."""
    from workers.store.db import upgrade

    applied = upgrade(database_url(load_settings()))
    click.echo("\n".join(f"applied {name}" for name in applied) if applied else "database is up to date")


@db.command("stats")
def db_stats() -> None:
    """Table sizes, and what the retention settings would delete now."""
    from workers.store.db import connect
    from workers.store.retention import Policy, preview, table_sizes
    from workers.support.clock import utcnow

    settings = load_settings()
    policy = Policy.from_settings(settings)
    with connect(database_url(settings)) as conn:
        sizes = table_sizes(conn)
        would = preview(conn, policy, utcnow()) if policy.enabled else None
    click.echo(f"{'table':<20} {'rows (estimate)':>16} {'total':>10} {'indexes':>10}")
    for size in sizes:
        rows = "not analysed" if size.rows < 0 else f"{size.rows:,}"
        click.echo(f"{size.name:<20} {rows:>16} {_bytes(size.total_bytes):>10} {_bytes(size.index_bytes):>10}")
    click.echo("")
    if would is None:
        click.echo(
            "retention: off (MISSIONS_RETAIN_EVENTS_DAYS, _OUTPUTS_DAYS and _RUNS_DAYS are unset): nothing is deleted"
        )
        return
    click.echo("retention would delete now (each line on its own; the beat tick does it in batches):")
    for label, days in (("runs", policy.runs), ("events", policy.events), ("outputs", policy.outputs)):
        if days is None:
            click.echo(f"  {label}: kept for ever")
        elif label == "runs":
            click.echo(
                f"  runs finished over {days.total_seconds() / 86400:g} days ago: {would.runs:,} runs, "
                f"with {would.run_attempts:,} attempts and {would.run_events:,} events"
            )
        elif label == "events":
            click.echo(
                f"  events of runs finished over {days.total_seconds() / 86400:g} days ago: {would.events:,} "
                f"events of {would.event_runs:,} runs"
            )
        else:
            click.echo(
                f"  prompts and outputs of runs finished over {days.total_seconds() / 86400:g} days ago: "
                f"{would.outputs:,} attempts of {would.output_runs:,} runs"
            )
    if policy.deliveries is not None:
        click.echo(
            f"  webhook deliveries finished over {policy.deliveries.total_seconds() / 86400:g} days ago: "
            f"{would.deliveries:,}"
        )


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


@click.group()
def keys() -> None:
    """API keys of a project (on the server's database; the API has /v1/keys too)."""


def _project_name(project: str) -> str:
    if not project.strip() or len(project) > 200:
        raise click.BadParameter("a project name has 1 to 200 characters", param_hint="--project")
    return project.strip()


@contextmanager
def _database() -> Iterator[Any]:
    """A connection to the server's database, migrated first; store errors as CLI errors."""
    from workers.store.db import connect, upgrade
    from workers.support.errors import MissionsError

    url = database_url(load_settings())
    upgrade(url)
    try:
        with connect(url) as conn:
            yield conn
    except MissionsError as exc:
        raise click.ClickException(exc.message) from None


def _project_id(conn: Any, project: str) -> str:
    from workers.store.projects import project_by_name

    return str(project_by_name(conn, _project_name(project))["id"])


@keys.command("create")
@click.option("--project", required=True, help="Project the key belongs to (created if new).")
@click.option("--name", default=None, help="A name to tell the key apart by (e.g. ci, laptop).")
def keys_create(project: str, name: str | None) -> None:
    """Create an API key; the key is the last line of output."""
    from workers.store.projects import create_key

    with _database() as conn:
        secret = create_key(conn, _project_name(project), name)
    click.echo(f"created a key for project {project.strip()!r}; it is shown only once:", err=False)
    click.echo(secret)


@keys.command("list")
@click.option("--project", required=True, help="The project whose keys to list.")
def keys_list(project: str) -> None:
    """The project's keys: id, prefix, name, created, last used, revoked (never a secret)."""
    from workers.store.projects import list_keys

    with _database() as conn:
        rows = list_keys(conn, _project_id(conn, project))
    click.echo(f"{'id':<33} {'prefix':<13} {'name':<16} {'created':<20} {'last used':<20} revoked")
    for row in rows:
        click.echo(
            f"{row['id']:<33} {row['prefix']:<13} {row['name'] or '-':<16} {_when(row['created_at']):<20} "
            f"{_when(row['last_used_at']):<20} {_when(row['revoked_at'])}"
        )


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


@keys.command("revoke")
@click.option("--project", required=True, help="The project the key belongs to.")
@click.argument("key_id")
def keys_revoke(project: str, key_id: str) -> None:
    """Revoke the key KEY_ID (see `keys list`): refused by the very next request."""
    from workers.store.projects import revoke_key

    with _database() as conn:
        revoke_key(conn, _project_id(conn, project), key_id)
    click.echo(f"revoked {key_id}")


@keys.command("rotate")
@click.option("--project", required=True, help="The project the key belongs to.")
@click.argument("key_id")
def keys_rotate(project: str, key_id: str) -> None:
    """Revoke KEY_ID and create its successor (same name) at once; the new key is the last line."""
    from workers.store.projects import rotate_key

    with _database() as conn:
        created = rotate_key(conn, _project_id(conn, project), key_id)
    click.echo(f"revoked {key_id}; its successor {created.row['id']} is shown only once:")
    click.echo(created.secret)


@click.group()
def project() -> None:
    """Projects (on the server's database)."""


@project.command("limits")
@click.option("--project", "name", required=True, help="The project.")
@click.option("--rate", type=click.IntRange(1, 1_000_000), default=None, help="Requests a second per key.")
@click.option("--burst", type=click.IntRange(1, 10_000_000), default=None, help="Requests at once per key.")
@click.option("--default", "use_default", is_flag=True, help="Use the server's MISSIONS_RATE_LIMIT(_BURST) again.")
def project_limits(name: str, rate: int | None, burst: int | None, use_default: bool) -> None:
    """Show or set the project's own rate limit per API key (takes effect on the next request)."""
    from workers.store.projects import project_by_name, set_rate_limit

    if use_default and (rate is not None or burst is not None):
        raise click.UsageError("--default sets both back; give it without --rate or --burst")
    with _database() as conn:
        row = project_by_name(conn, _project_name(name))
        if use_default or rate is not None or burst is not None:
            new_rate = None if use_default else (rate if rate is not None else row["rate_limit"])
            new_burst = None if use_default else (burst if burst is not None else row["rate_limit_burst"])
            row = set_rate_limit(conn, row["name"], new_rate, new_burst)
    settings = load_settings()
    rate_now = row["rate_limit"] or settings.rate_limit
    burst_now = max(row["rate_limit_burst"] or settings.rate_limit_burst, rate_now)
    source = "the project's own" if row["rate_limit"] or row["rate_limit_burst"] else "the server's"
    click.echo(f"project {row['name']!r}: {rate_now} requests/s per key, bursts of {burst_now} ({source})")


@click.command("api")
@click.option("--host", default=None, help="Interface to bind (MISSIONS_HOST).")
@click.option("--port", type=int, default=None, help="Port (MISSIONS_PORT).")
@click.option(
    "--workers",
    "processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Server processes; each serves MISSIONS_API_THREADS connections with gevent.",
)
def api_command(host: str | None, port: int | None, processes: int) -> None:
    """Serve the HTTP API under gunicorn (gevent workers)."""
    settings = load_settings(host=host, port=port)
    if not settings.database_url or not settings.redis_url:
        raise click.ClickException(
            "DATABASE_URL and REDIS_URL must be set for `missions api`; `missions up` starts embedded ones"
        )
    from api.http.server import serve

    serve(settings, processes=processes)


class QuietTicks(logging.Filter):
    """Celery logs "received" and "succeeded" for the tick every MISSIONS_TICK_SECONDS: noise that
    would bury everything else (`missions up` shows the worker's log on the terminal)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or "missions.tick[" not in record.getMessage()


def _require_urls(settings: Settings, command: str) -> None:
    if not settings.database_url or not settings.redis_url:
        raise click.ClickException(
            f"DATABASE_URL and REDIS_URL must be set for `missions {command}`; `missions up` starts embedded ones"
        )


@click.command("worker")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1000),
    default=8,
    show_default=True,
    help="Attempts run at once by this worker (threads: agents mostly wait on I/O).",
)
@click.option("--pool", type=click.Choice(["threads", "prefork", "solo"]), default="threads", show_default=True)
@click.option("--name", default=None, help="Node name (default: missions-<pid>).")
@click.option(
    "--queues",
    type=click.Choice(["all", "missions", "missions.control", "missions.webhooks"]),
    default="all",
    show_default=True,
    help="`missions`: task attempts and assessments; `missions.control`: the beat tick; "
    "`missions.webhooks`: webhook deliveries. A small control-only worker keeps ticks on time when "
    "long agent calls fill every slot.",
)
def worker_command(concurrency: int, pool: str, name: str | None, queues: str) -> None:
    """Run a Celery worker that executes task attempts, assessments and ticks."""
    settings = load_settings()
    _require_urls(settings, "worker")
    from workers.messaging.dispatch import CONTROL_QUEUE, TASK_QUEUE, WEBHOOK_QUEUE
    from workers.support.logs import configure_logging
    from workers.wiring import configure_tracing, worker_app

    configure_logging(settings)
    configure_tracing("worker")
    if settings.log_level != "debug":
        for handler in logging.getLogger().handlers:
            handler.addFilter(QuietTicks())
    app, _services = worker_app(settings)
    node = name or f"missions-{os.getpid()}"
    app.worker_main(
        [
            "worker",
            "--loglevel",
            settings.log_level.upper(),
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "--queues",
            f"{TASK_QUEUE},{CONTROL_QUEUE},{WEBHOOK_QUEUE}" if queues == "all" else queues,
            "--hostname",
            f"{node}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )


@click.command("beat")
def beat_command() -> None:
    """Run Celery beat, which sends missions.tick every MISSIONS_TICK_SECONDS (several beats are safe)."""
    settings = load_settings()
    _require_urls(settings, "beat")
    import tempfile

    from workers.messaging.celery_app import create_celery
    from workers.support.logs import configure_logging

    configure_logging(settings)
    app = create_celery(settings)
    folder = Path(tempfile.mkdtemp(prefix="missions-beat-"))
    # Beat logs every send at INFO, once a second; keep it quiet unless debugging.
    level = "DEBUG" if settings.log_level == "debug" else "WARNING"
    try:
        app.start(["beat", "--loglevel", level, "--schedule", str(folder / "schedule")])
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)  # one folder per start would pile up in /tmp


@click.command("up")
@click.option("--port", type=int, default=None, help="API port (MISSIONS_PORT, default 8000).")
@click.option("--workers", type=click.IntRange(1, 32), default=1, show_default=True, help="Worker processes.")
@click.option(
    "--concurrency", type=click.IntRange(1, 1000), default=8, show_default=True, help="Attempts per worker process."
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where embedded Postgres/Redis keep data (MISSIONS_DATA_DIR, default ~/.missions).",
)
def up_command(port: int | None, workers: int, concurrency: int, data_dir: Path | None) -> None:
    """Start API + worker + beat (with embedded Postgres and Redis when no URLs are set)."""
    from api.cli.up import run_up

    settings = load_settings(port=port, data_dir=data_dir.expanduser() if data_dir else None)
    sys.exit(run_up(settings, workers, concurrency))


@click.command("flower", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--port", type=click.IntRange(1, 65535), default=5555, show_default=True, help="Flower's port.")
@click.option("--address", default="127.0.0.1", show_default=True, help="Interface Flower binds to.")
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower_command(port: int, address: str, flower_args: tuple[str, ...]) -> None:
    """Run Flower (Celery's web monitor) on the workers' broker; task events off again when it stops.

    The same as `celery -A workers.wiring flower`, followed by `celery -A workers.wiring control
    disable_events` when Flower exits. Further options go to Flower as they are (`--basic-auth=...`)."""
    from workers.messaging.monitoring import run_flower
    from workers.support.logs import configure_logging
    from workers.wiring import tool_app

    configure_logging(load_settings())
    try:
        app = tool_app()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    run_flower(app, [f"--port={port}", f"--address={address}", *flower_args])
