"""``missions api`` as a real process: it serves over HTTP and stops promptly on SIGTERM."""

from __future__ import annotations

import copy
import json
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


def test_a_stop_ends_open_event_streams_at_once_instead_of_waiting_for_them(database_url: str, server: Server) -> None:
    created_key = missions("keys", "create", "--project", "acme", DATABASE_URL=database_url)
    headers = {"Authorization": f"Bearer {created_key.stdout.splitlines()[-1]}"}
    mission = requests.post(
        f"{server.base}/v1/missions", json=copy.deepcopy(DEPLOY_PIPELINE), headers=headers, timeout=10
    ).json()
    run = requests.post(f"{server.base}/v1/missions/{mission['id']}/execute", headers=headers, timeout=10).json()
    # No worker runs: the run stays active and its stream would stay open for ever.
    stream = requests.get(
        f"{server.base}/v1/missions/{mission['id']}/events",
        headers={**headers, "Accept": "text/event-stream"},
        stream=True,
        timeout=30,
    )
    assert stream.status_code == 200
    lines = stream.iter_lines()
    received = [next(lines) for _ in range(3)]  # the retry hint and the first replayed event
    assert any(line.startswith((b"id:", b"event:")) for line in received), received
    took = server.stop(within=10)
    rest = list(lines)  # the server ended the stream (a client would reconnect with Last-Event-ID)
    assert took < 3, f"the stop waited {took:.1f} s for the open stream"
    assert server.process.returncode == 0, server.log.read_text()
    assert run["id"] and isinstance(rest, list)


def test_the_api_server_refuses_to_start_without_database_and_redis_urls(tmp_path: Path) -> None:
    result = missions("api", "--port", str(free_port()), timeout=60, MISSIONS_DATA_DIR=str(tmp_path))
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr


def raw_request(server: Server, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as is; the status, headers and body of the answer (the server closes)."""
    port = int(server.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, body


GET = b"GET /v1/missions HTTP/1.1\r\nHost: x\r\n"
REFUSED_BY_THE_SERVER = {
    "request line too long": (b"GET /v1/missions?q=" + b"x" * 5000 + b" HTTP/1.1\r\n\r\n", 414, "request line"),
    "a header too large": (GET + b"X-Big: " + b"y" * 9000 + b"\r\n\r\n", 431, "headers"),
    "too many headers": (GET + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n", 431, "headers"),
    "a malformed request line": (b"GET\x01 / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed"),
}


def test_what_the_http_server_refuses_itself_is_answered_in_the_error_shape(server: Server) -> None:
    for name, (request, status, text) in REFUSED_BY_THE_SERVER.items():
        got, headers, body = raw_request(server, request)
        assert got == status, (name, got, body[:300])
        assert headers["content-type"] == "application/json", (name, headers)
        error = json.loads(body)
        assert set(error) == {"error", "code", "details"}, (name, error)
        assert error["code"] == "bad_request" and text in error["error"], (name, error)
    # The limits are the documented ones: a request line just under it is served.
    under = requests.get(f"{server.base}/v1/missions?q={'x' * 3900}", timeout=10)
    assert under.status_code == 401 and under.json()["code"] == "unauthorized"
    assert "Traceback" not in server.log.read_text()


def test_the_api_server_answers_503_with_retry_after_within_seconds_while_postgres_is_down(
    redis_url: str, tmp_path: Path
) -> None:
    port, dead = free_port(), free_port()  # nothing listens on `dead`
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [missions_executable(), "api", "--port", str(port)],
            env=environment(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{dead}/missions", REDIS_URL=redis_url),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until_healthy(server)
        started = time.monotonic()
        answer = requests.get(f"{server.base}/v1/missions", headers={"Authorization": "Bearer sk_live_x"}, timeout=30)
        took = time.monotonic() - started
        assert answer.status_code == 503, answer.text
        assert answer.json()["code"] == "unavailable" and set(answer.json()) == {"error", "code", "details"}
        assert answer.headers["Retry-After"] == "5"
        assert took < 6, took  # the request's pool wait (3 s), not the pool's 30 s
        server.stop(within=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
