"""``missions up`` as a newcomer runs it: no DATABASE_URL or REDIS_URL, a fresh data dir. It must
serve, run a mission, stop without leaving a process behind, and keep its data and key."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import requests

from config import SETTINGS_TABLE
from tests.e2e.scenarios import agent, mission
from tests.integration.test_cli import missions_executable
from tests.support.stack import free_port

pytestmark = pytest.mark.e2e


def up_environment() -> dict[str, str]:
    settings = {s.variable for s in SETTINGS_TABLE}
    env = {k: v for k, v in os.environ.items() if k not in settings}
    env.update({"MISSIONS_TICK_SECONDS": "0.3", "MISSIONS_HEARTBEAT_SECONDS": "0.5"})
    return env


def processes_using(data_dir: Path) -> list[psutil.Process]:
    """Embedded Postgres (its data dir is on the command line) and Redis (its working dir)."""
    found = []
    marker = str(data_dir.resolve())
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        if proc.pid == os.getpid():
            continue
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if marker in cmdline or (proc.info["cwd"] or "").startswith(marker):
                found.append(proc)
        except psutil.Error:
            continue
    return found


@dataclass
class Up:
    data_dir: Path
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [
                    missions_executable(),
                    "up",
                    "--data-dir",
                    str(self.data_dir),
                    "--port",
                    str(self.port),
                    "--concurrency",
                    "2",
                ],
                env=up_environment(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90) -> str:
        """The key printed once `missions up` says it is ready."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"missions up exited with {self.process.returncode}:\n{self.output()[-4000:]}")
            text = self.output()
            if "Missions is ready at" in text:
                key = [line for line in text.splitlines() if line.startswith("sk_live_")][-1]
                assert requests.get(f"{self.url}/readyz", timeout=5).status_code == 200
                return key
            time.sleep(0.2)
        pytest.fail(f"missions up was not ready within {timeout} s:\n{self.output()[-4000:]}")

    def family(self) -> list[psutil.Process]:
        """The supervisor, everything it started, and the embedded services of its data dir."""
        assert self.process is not None
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True), *processes_using(self.data_dir)]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"missions up still ran {timeout} s after {signal.Signals(sig).name}:\n{self.output()[-4000:]}")

    def kill_everything(self) -> None:
        """Test teardown: nothing may survive a failed test either."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for proc in processes_using(self.data_dir):
            try:
                proc.kill()
            except psutil.Error:
                pass


def survivors(processes: list[psutil.Process], within: float = 5) -> list[str]:
    deadline = time.monotonic() + within
    alive = processes
    while time.monotonic() < deadline:
        alive = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return []
        time.sleep(0.1)
    return [f"{p.pid} {' '.join(p.cmdline())[:120]}" for p in alive]


def run_mission(url: str, key: str, name: str) -> str:
    headers = {"Authorization": f"Bearer {key}"}
    doc = mission(
        name,
        [{"title": "First", "assignTo": "a"}, {"title": "Second", "assignTo": "a", "dependsOn": ["First"]}],
        [agent("a", {"outputChunks": ["hello ", "world"]})],
    )
    created = requests.post(f"{url}/v1/missions", json=doc, headers=headers, timeout=10)
    assert created.status_code == 201, created.text
    mission_id = str(created.json()["id"])
    assert requests.post(f"{url}/v1/missions/{mission_id}/execute", headers=headers, timeout=10).status_code == 202
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = requests.get(f"{url}/v1/missions/{mission_id}", headers=headers, timeout=10).json()["status"]
        if status in ("completed", "failed", "cancelled"):
            assert status == "completed"
            return mission_id
        time.sleep(0.2)
    pytest.fail(f"mission {mission_id} did not finish")


@dataclass
class FirstStart:
    data_dir: Path
    key: str
    mission_id: str
    exit_code: int
    survivors: list[str]
    output: str


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("up") / "data"


@pytest.fixture(scope="module")
def first_start(data_dir: Path) -> Iterator[FirstStart]:
    """A first `missions up` on an empty data dir: ready, one mission run, then SIGTERM."""
    up = Up(data_dir, data_dir.parent / "first.log")
    try:
        up.start()
        key = up.wait_ready()
        mission_id = run_mission(up.url, key, "first")
        family = up.family()
        code = up.stop(signal.SIGTERM)
        yield FirstStart(data_dir, key, mission_id, code, survivors(family), up.output())
    finally:
        up.kill_everything()


def test_up_on_an_empty_data_dir_serves_runs_a_mission_and_stops_cleanly_on_sigterm(first_start: FirstStart) -> None:
    assert "Postgres: embedded" in first_start.output and "Redis: embedded" in first_start.output
    assert first_start.key.startswith("sk_live_")
    assert (first_start.data_dir / "api-key").read_text().strip() == first_start.key
    assert first_start.exit_code == 0, first_start.output[-3000:]
    assert first_start.survivors == [], first_start.output[-3000:]
    assert processes_using(first_start.data_dir) == []


def test_a_second_start_keeps_the_mission_and_the_key(first_start: FirstStart, data_dir: Path) -> None:
    up = Up(data_dir, data_dir.parent / "second.log")
    try:
        up.start()
        key = up.wait_ready()
        assert key == first_start.key
        answer = requests.get(
            f"{up.url}/v1/missions/{first_start.mission_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        assert answer.status_code == 200 and answer.json()["status"] == "completed"
        family = up.family()
        assert up.stop(signal.SIGINT) == 0
        assert survivors(family) == []
    finally:
        up.kill_everything()


def test_a_child_that_dies_stops_the_whole_group_with_a_non_zero_status(
    first_start: FirstStart, data_dir: Path
) -> None:
    up = Up(data_dir, data_dir.parent / "third.log")
    try:
        up.start()
        up.wait_ready()
        family = up.family()
        worker = next(p for p in family if "worker" in p.cmdline() and p.ppid() == up.process.pid)  # type: ignore[union-attr]
        worker.kill()
        assert up.process is not None
        code = up.process.wait(40)
        assert code != 0
        assert "worker-1 was killed by SIGKILL" in up.output()
        assert survivors(family) == [], up.output()[-3000:]
    finally:
        up.kill_everything()
