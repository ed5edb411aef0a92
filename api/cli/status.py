"""``missions status``: what runs where, asked of each part on its own so one that is down is
reported rather than stopping the report.

- the API (``/readyz``) and the dashboard URL: ``--url``/``MISSIONS_URL``, else the ``missions up``
  that owns the data dir (``workers.support.instance``), else the default;
- Postgres and Redis: the configured URLs, else the running ``missions up``'s (its embedded ones),
  printed without their password;
- live workers and their concurrency (Celery's ``inspect``: the same broadcast ``celery -A
  workers.wiring inspect stats`` sends);
- per queue: queued attempts and the oldest one's age (Postgres, the truth) and the messages in the
  broker's list (Redis); the tick lag.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click

from config import Settings
from workers.support import instance

PROBE_SECONDS = 3.0


def collect(settings: Settings, url: str | None) -> dict[str, Any]:
    """The report as a JSON-ready dict (see the module docstring)."""
    from api.cli.client import DEFAULT_URL
    from workers.support.embedded import REDIS_PASSWORD_FILE
    from workers.wiring import Services

    up = instance.running(settings.data_dir)
    api_url = (url or (up or {}).get("url") or DEFAULT_URL).rstrip("/")
    database_url = settings.database_url or (up or {}).get("databaseUrl")
    redis_url = settings.redis_url or (up or {}).get("redisUrl")
    redis_embedded = bool(not settings.redis_url and (up or {}).get("redisEmbedded"))
    report: dict[str, Any] = {
        "dataDir": str(settings.data_dir),
        "up": {"pid": up.get("pid"), "state": up.get("state")} if up else None,
        "api": {"url": api_url, "dashboardUrl": f"{api_url}/ui/", **_probe_api(api_url)},
        "postgres": {
            "url": instance.redact_url(database_url) if database_url else None,
            "embedded": bool(not settings.database_url and (up or {}).get("databaseEmbedded")),
            "reachable": False,
        },
        "redis": {
            "url": instance.redact_url(redis_url) if redis_url else None,
            "embedded": redis_embedded,
            "passwordFile": str(settings.data_dir / REDIS_PASSWORD_FILE) if redis_embedded else None,
            "reachable": False,
        },
        "workers": [],
        "queues": {},
        "tickLagSeconds": None,
    }
    if not database_url or not redis_url:
        missing = "DATABASE_URL" if not database_url else "REDIS_URL"
        report["error"] = f"{missing} is not set and no `missions up` runs on {settings.data_dir}"
        return report
    services = Services(settings.replace(database_url=database_url, redis_url=redis_url, db_pool_size=1))
    try:
        _postgres(services, report)
        _redis(services, report)
    finally:
        services.close()
    return report


def _probe_api(url: str) -> dict[str, Any]:
    import requests

    try:
        response = requests.get(f"{url}/readyz", timeout=PROBE_SECONDS)
    except requests.RequestException as exc:
        return {"reachable": False, "ready": False, "error": type(exc).__name__}
    return {"reachable": True, "ready": response.status_code == 200}


def _postgres(services: Any, report: dict[str, Any]) -> None:
    from workers.messaging.dispatch import TASK_QUEUE
    from workers.store import metrics

    try:
        with services.db.connection(timeout=PROBE_SECONDS) as conn:
            depth = metrics.queue_depth(conn)
            lag = metrics.tick_lag(conn)
    except Exception as exc:  # noqa: BLE001 - a part that is down is reported, not raised
        report["postgres"]["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return
    report["postgres"]["reachable"] = True
    report["queues"].setdefault(TASK_QUEUE, {}).update(
        {"queuedAttempts": depth.queued, "oldestQueuedSeconds": round(depth.oldest_seconds, 3)}
    )
    report["tickLagSeconds"] = round(lag, 3)


def _redis(services: Any, report: dict[str, Any]) -> None:
    from workers.messaging import monitoring

    try:
        lengths = monitoring.queue_lengths(services.redis)
    except Exception as exc:  # noqa: BLE001 - a part that is down is reported, not raised
        report["redis"]["error"] = str(exc) or type(exc).__name__
        return
    report["redis"]["reachable"] = True
    for queue, length in lengths.items():
        report["queues"].setdefault(queue, {})["brokerMessages"] = length
    try:
        report["workers"] = [asdict(w) for w in monitoring.live_workers(services.celery, timeout=1.0)]
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        report["workersError"] = str(exc) or type(exc).__name__


def healthy(report: dict[str, Any]) -> bool:
    """API ready, Postgres and Redis reachable, and at least one worker answering."""
    return bool(
        report["api"].get("ready")
        and report["postgres"]["reachable"]
        and report["redis"]["reachable"]
        and report["workers"]
    )


def render(report: dict[str, Any]) -> list[str]:
    """The report for a person."""
    up = report["up"]
    owner = f"missions up pid {up['pid']} ({up['state']})" if up else "no `missions up` on it"
    lines = [f"data dir    {report['dataDir']}  ({owner})"]
    api = report["api"]
    state = "ready" if api.get("ready") else ("not ready" if api.get("reachable") else "unreachable")
    lines.append(f"API         {api['url']}  {state}")
    lines.append(f"dashboard   {api['dashboardUrl']}")
    for name, label in (("postgres", "Postgres"), ("redis", "Redis")):
        part = report[name]
        notes = ["embedded"] if part["embedded"] else []
        if part.get("passwordFile"):
            notes.append(f"password in {part['passwordFile']}")
        where = part["url"] or "not configured"
        state = "up" if part["reachable"] else f"DOWN ({part.get('error', 'not checked')})"
        lines.append(f"{label:<11} {where}" + (f"  ({', '.join(notes)})" if notes else "") + f"  {state}")
    if report.get("error"):
        lines.append(f"error       {report['error']}")
    workers = report["workers"]
    slots = sum(w["concurrency"] or 0 for w in workers)
    lines.append(f"workers     {len(workers)} live, {slots} slots" if workers else "workers     none answered")
    for worker in workers:
        queues = ", ".join(worker["queues"]) or "?"
        busy = "?" if worker["active"] is None else worker["active"]
        lines.append(
            f"  {worker['name']}  {worker['pool'] or '?'} x {worker['concurrency'] or '?'}, {busy} active, "
            f"queues {queues}"
        )
    for queue, figures in sorted(report["queues"].items()):
        parts = []
        if "queuedAttempts" in figures:
            parts.append(f"{figures['queuedAttempts']} queued attempts (oldest {figures['oldestQueuedSeconds']:.1f} s)")
        if "brokerMessages" in figures:
            parts.append(f"{figures['brokerMessages']} messages in the broker")
        lines.append(f"queue       {queue}: " + ", ".join(parts))
    if report["tickLagSeconds"] is not None:
        lines.append(f"tick lag    {report['tickLagSeconds']:.1f} s")
    return lines


@click.command("status")
@click.option(
    "--url",
    envvar="MISSIONS_URL",
    default=None,
    help="Server URL (MISSIONS_URL; default: the `missions up` running on the data dir, else http://127.0.0.1:8000).",
)
@click.option("--json", "json_output", is_flag=True, help="Print the report as JSON.")
def status_command(url: str | None, json_output: bool) -> None:
    """What runs where: API and dashboard, Postgres and Redis, live workers, queues, tick lag.

    Exit status 0 when the API is ready, Postgres and Redis answer and a worker is live; else 1."""
    import json
    import sys

    from api.cli.common import load_settings

    report = collect(load_settings(), url)
    if json_output:
        click.echo(json.dumps(report, indent=2))
    else:
        for line in render(report):
            click.echo(line)
    sys.exit(0 if healthy(report) else 1)
