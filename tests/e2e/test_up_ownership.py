"""``missions up`` owns its data dir and tells the other commands where it runs: a second start on
the same folder refuses naming the first, client commands and ``missions status`` find its URL and
its embedded services, Celery's own tools attach to it with ``-A workers.wiring``, and its
embedded Redis wants the password kept in the data dir."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.test_up import Up, run_mission, up_environment
from tests.integration.test_cli import missions_executable
from tests.support.stack import celery_tool

pytestmark = pytest.mark.e2e


@dataclass
class Running:
    up: Up
    key: str
    env: dict[str, str]

    def missions(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [missions_executable(), *args], check=False, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def celery(self, *args: str) -> subprocess.CompletedProcess[str]:
        return celery_tool(self.env, *args)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data_dir = tmp_path_factory.mktemp("owned") / "data"
    up = Up(data_dir, data_dir.parent / "up.log")
    try:
        up.start()
        key = up.wait_ready()
        # What an operator's shell has: no URLs, no key, only where the data dir is.
        env = {**up_environment(), "MISSIONS_DATA_DIR": str(data_dir)}
        yield Running(up, key, env)
    finally:
        up.kill_everything()


def test_a_second_up_on_the_same_data_dir_refuses_and_names_the_running_one(running: Running) -> None:
    second = running.missions("up", "--data-dir", str(running.up.data_dir), "--port", "1", timeout=60)
    assert second.returncode == 1
    assert running.up.process is not None
    assert f"pid {running.up.process.pid}" in second.stderr
    assert running.up.url in second.stderr
    assert running.up.process.poll() is None  # the first one is untouched


def test_client_commands_find_the_servers_url_without_url(running: Running) -> None:
    mission_id = run_mission(running.up.url, running.key, "found")
    listed = running.missions("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert mission_id in {m["id"] for m in json.loads(listed.stdout)}
    shown = running.missions("show", mission_id)
    assert shown.returncode == 0 and "completed" in shown.stdout


def test_status_reports_what_runs_where(running: Running) -> None:
    answer = running.missions("status", "--json")
    assert answer.returncode == 0, answer.stdout + answer.stderr
    report = json.loads(answer.stdout)
    assert running.up.process is not None
    assert report["up"] == {"pid": running.up.process.pid, "state": "ready"}
    assert report["api"] == {
        "url": running.up.url,
        "dashboardUrl": f"{running.up.url}/ui/",
        "reachable": True,
        "ready": True,
    }
    assert report["postgres"]["embedded"] is True and report["postgres"]["reachable"] is True
    redis = report["redis"]
    assert redis["embedded"] is True and redis["reachable"] is True
    assert ":***@127.0.0.1:" in redis["url"]
    [worker] = report["workers"]
    assert worker["concurrency"] == 2 and worker["pool"] == "thread"
    assert set(worker["queues"]) == {"missions", "missions.control", "missions.webhooks"}
    assert report["queues"]["missions"]["queuedAttempts"] == 0
    assert report["queues"]["missions"]["brokerMessages"] == 0
    assert report["queues"]["missions.control"]["brokerMessages"] >= 0
    assert report["tickLagSeconds"] < 5

    text = running.missions("status")
    assert text.returncode == 0
    assert f"dashboard   {running.up.url}/ui/" in text.stdout
    assert "workers     1 live, 2 slots" in text.stdout
    assert "password in" in text.stdout and running.key not in text.stdout


def test_the_embedded_redis_wants_the_password_kept_in_the_data_dir(running: Running) -> None:
    password_file = running.up.data_dir / "redis-password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((running.up.data_dir / "up.json").stat().st_mode) == 0o600
    password = password_file.read_text().strip()
    redis_url = json.loads((running.up.data_dir / "up.json").read_text())["redisUrl"]
    port = urlsplit(redis_url).port
    assert port is not None

    def ask(commands: bytes, replies: int) -> list[bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, sock.makefile("rb") as answers:
            sock.sendall(commands)
            return [answers.readline().strip() for _ in range(replies)]

    [refused] = ask(b"PING\r\n", 1)
    assert refused.startswith(b"-NOAUTH")
    assert ask(f"AUTH {password}\r\nPING\r\n".encode(), 2) == [b"+OK", b"+PONG"]
    # The password is not on any command line (ps shows those to every user).
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            assert password.encode() not in cmdline


def test_celery_inspect_ping_and_active_reach_the_worker_with_the_documented_target(running: Running) -> None:
    ping = running.celery("inspect", "ping")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert "pong" in ping.stdout and "1 node online" in ping.stdout
    active = running.celery("inspect", "active", "--json")
    assert active.returncode == 0, active.stdout + active.stderr
    [(node, tasks)] = json.loads(active.stdout).items()
    assert node.startswith("up1-")
    # No attempt is running; the periodic tick may be, on its control queue.
    assert [task["name"] for task in tasks if task["name"] != "missions.tick"] == []
