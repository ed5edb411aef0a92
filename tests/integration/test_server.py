"""``missions api`` as a real process: it serves over HTTP and stops promptly on SIGTERM."""

from __future__ import annotations

import copy
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.fixtures.examples import DEPLOY_PIPELINE
from tests.integration.test_cli import environment, missions, missions_executable


@dataclass
class Server:
    base: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, within: float = 10) -> float:
        """SIGTERM, then the seconds it took to exit; fails if it takes longer than ``within``."""
        self.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            self.process.wait(timeout=within)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server was still running {within} s after SIGTERM:\n{self.log.read_text()}")
        return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_healthy(server: Server, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"the server exited with {server.process.returncode}:\n{server.log.read_text()}")
        try:
            if requests.get(f"{server.base}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass  # not listening yet, or the master accepted before a worker was ready to answer
        time.sleep(0.2)
    pytest.fail(f"the server did not answer /healthz within {within} s:\n{server.log.read_text()}")


@pytest.fixture
def server(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [missions_executable(), "api", "--port", str(port)],
            env=environment(DATABASE_URL=database_url, REDIS_URL=redis_url),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until_healthy(running)
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_the_api_server_serves_missions_over_http_and_stops_on_sigterm(database_url: str, server: Server) -> None:
    created_key = missions("keys", "create", "--project", "acme", DATABASE_URL=database_url)
    assert created_key.returncode == 0, created_key.stderr
    headers = {"Authorization": f"Bearer {created_key.stdout.splitlines()[-1]}"}

    # One keep-alive client stays connected (idle) while the server is told to stop.
    with requests.Session() as client:
        created = client.post(
            f"{server.base}/v1/missions", json=copy.deepcopy(DEPLOY_PIPELINE), headers=headers, timeout=10
        )
        assert created.status_code == 201, created.text
        mission = created.json()
        assert mission["name"] == "deploy-pipeline"
        assert mission["id"].startswith("msn_")

        got = client.get(f"{server.base}/v1/missions/{mission['id']}", headers=headers, timeout=10)
        assert got.status_code == 200, got.text
        assert got.json()["id"] == mission["id"]
        assert got.json()["tasks"][1]["dependsOn"] == ["Run tests"]
        assert client.get(f"{server.base}/readyz", timeout=10).json()["checks"] == {"postgres": "ok", "redis": "ok"}
        assert client.get(f"{server.base}/v1/missions", timeout=10).status_code == 401

        server.stop(within=10)

    assert server.process.returncode == 0, server.log.read_text()


def test_the_api_server_stops_quickly_and_quietly_once_its_clients_are_gone(server: Server) -> None:
    assert requests.get(f"{server.base}/readyz", timeout=30).status_code == 200  # opens the database pool
    assert server.stop(within=10) < 3
    assert server.process.returncode == 0
    log = server.log.read_text()
    assert "Traceback" not in log, log


def test_the_api_server_refuses_to_start_without_database_and_redis_urls(tmp_path: Path) -> None:
    result = missions("api", "--port", str(free_port()), timeout=60, MISSIONS_DATA_DIR=str(tmp_path))
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr
