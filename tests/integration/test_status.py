"""``missions status`` asks each part on its own: one that is down is reported as down, and the
others are still reported."""

from __future__ import annotations

from pathlib import Path

from api.cli import status
from config import Settings
from tests.support.stack import free_port


def test_a_redis_that_is_down_is_reported_and_postgres_still_answers(settings: Settings, tmp_path: Path) -> None:
    down = settings.replace(redis_url=f"redis://:secret@127.0.0.1:{free_port()}/0", data_dir=tmp_path / "data")
    api = f"http://127.0.0.1:{free_port()}"
    report = status.collect(down, api)
    assert report["up"] is None
    assert report["api"] == {
        "url": api,
        "dashboardUrl": f"{api}/ui/",
        "reachable": False,
        "ready": False,
        "error": "ConnectionError",
    }
    assert report["postgres"]["reachable"] is True
    assert report["queues"]["missions"] == {"queuedAttempts": 0, "oldestQueuedSeconds": 0.0}
    assert report["tickLagSeconds"] == 0.0
    assert report["redis"]["reachable"] is False and report["redis"]["error"]
    assert report["redis"]["url"].startswith("redis://:***@127.0.0.1:")
    assert report["workers"] == []
    assert not status.healthy(report)
    lines = status.render(report)
    assert f"API         {api}  unreachable" in lines
    assert any(line.startswith("Redis") and "DOWN" in line for line in lines)
    assert any(line.startswith("Postgres") and line.endswith("  up") for line in lines)
    assert "secret" not in "\n".join(lines)


def test_without_urls_and_without_a_running_up_it_says_what_is_missing(tmp_path: Path) -> None:
    report = status.collect(Settings(data_dir=tmp_path / "data"), None)
    assert report["error"] == f"DATABASE_URL is not set and no `missions up` runs on {tmp_path / 'data'}"
    assert not status.healthy(report)
    assert f"error       {report['error']}" in status.render(report)
