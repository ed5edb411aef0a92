"""Real processes for end-to-end tests: ``missions api``, ``missions worker`` and ``missions beat``
on the test's own database and Redis, driven over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.support.sse import SseEvent, read_events


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from api.cli import main; main()", *args]


@dataclass
class Stack:
    env: dict[str, str]
    logs: Path
    port: int = field(default_factory=free_port)
    key: str = ""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            cli(*args), env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes[name] = process
        return process

    def start_api(self) -> None:
        self.env["MISSIONS_PORT"] = str(self.port)
        self.spawn("api", "api")
        wait_for(lambda: _ok(f"{self.url}/healthz"), 30, "the API to answer /healthz", self)

    def start_worker(self, name: str = "worker", concurrency: int = 4) -> None:
        self.spawn(name, "worker", "--concurrency", str(concurrency), "--name", f"{name}-{os.getpid()}")

    def start_beat(self) -> None:
        self.spawn("beat", "beat")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        process.wait(10)

    def stop(self) -> None:
        for process in self.processes.values():
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for _name, process in list(self.processes.items()):
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        self.processes.clear()

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    # -- HTTP --------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def create(self, document: Mapping[str, Any]) -> dict[str, Any]:
        response = self.request("POST", "/v1/missions", json=document)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def execute(self, mission_id: str) -> dict[str, Any]:
        response = self.request("POST", f"/v1/missions/{mission_id}/execute")
        assert response.status_code == 202, response.text
        return dict(response.json())

    def execute_streaming(self, mission_id: str, timeout: float = 60) -> list[SseEvent]:
        """Execute with ``Accept: text/event-stream`` and read the run's stream to its ``mission:done``."""
        return read_events(
            f"{self.url}/v1/missions/{mission_id}/execute",
            {**self.headers, "Accept": "text/event-stream"},
            method="POST",
            timeout=timeout,
        )

    def mission(self, mission_id: str) -> dict[str, Any]:
        response = self.request("GET", f"/v1/missions/{mission_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_status(self, mission_id: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def reached() -> bool:
            seen.update(self.mission(mission_id))
            return seen["status"] in statuses

        wait_for(reached, timeout, f"mission status in {statuses} (last: {seen.get('status')})", self)
        return seen

    def tasks(self, mission: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        return {t["title"]: t for t in mission["tasks"]}


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def wait_for(condition: Callable[[], bool], timeout: float, what: str, stack: Stack | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    detail = f"\n{stack.log_tail()}" if stack is not None else ""
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{detail}")


def celery_tool(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``celery -A workers.wiring ARGS``, the documented target of Celery's own tools."""
    celery = str(Path(sys.executable).parent / "celery")
    return subprocess.run(
        [celery, "-A", "workers.wiring", *args], check=False, env=dict(env), capture_output=True, text=True, timeout=60
    )
