"""Celery's own tools against real workers, with the documented target ``-A workers.wiring``:
``celery inspect active`` shows a running attempt, and ``missions flower`` turns task events on
while it runs and off again when it stops."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests
from celery import Celery

from tests.e2e.scenarios import agent, mission
from tests.support.stack import Stack, celery_tool, free_port, wait_for

pytestmark = pytest.mark.e2e


def test_inspect_active_shows_the_attempt_a_worker_runs(stack: Stack) -> None:
    doc = mission("slow", [{"title": "Wait", "assignTo": "a"}], [agent("a", {"delay": 30})])
    mission_id = stack.create(doc)["id"]
    run_id = stack.execute(mission_id)["id"]
    seen: dict[str, Any] = {}

    def running() -> bool:
        answer = celery_tool(stack.env, "inspect", "active", "--json")
        assert answer.returncode == 0, answer.stdout + answer.stderr
        seen.update(json.loads(answer.stdout))
        return any(t["name"] == "missions.run_task" and run_id in t["args"] for ts in seen.values() for t in ts)

    wait_for(running, 30, "celery inspect active to list the attempt", stack)
    stack.request("POST", f"/v1/missions/{mission_id}/abort")
    ping = celery_tool(stack.env, "inspect", "ping")
    assert ping.returncode == 0 and "pong" in ping.stdout


class TaskEvents:
    """Task events the workers publish, as Flower would receive them (worker heartbeats left out)."""

    def __init__(self, redis_url: str) -> None:
        self.app = Celery(broker=redis_url, set_as_current=False)
        self.seen: list[str] = []
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._ready = threading.Event()

    def _listen(self) -> None:
        with self.app.connection() as conn:
            self._receiver = self.app.events.Receiver(conn, handlers={"*": self._on_event})
            self._ready.set()
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def _on_event(self, event: dict[str, Any]) -> None:
        if str(event.get("type", "")).startswith("task-"):
            self.seen.append(event["type"])

    @contextmanager
    def listening(self) -> Iterator[TaskEvents]:
        self._thread.start()
        assert self._ready.wait(10)
        try:
            yield self
        finally:
            self._receiver.should_stop = True
            self._thread.join(5)
            self.app.close()


def run_quick_mission(stack: Stack, name: str) -> None:
    doc = mission(name, [{"title": "Quick", "assignTo": "a"}], [agent("a", {"output": "done"})])
    mission_id = stack.create(doc)["id"]
    stack.execute(mission_id)
    stack.wait_status(mission_id, "completed")


def test_missions_flower_serves_and_switches_task_events_off_when_it_stops(stack: Stack) -> None:
    port = free_port()
    log = open(stack.logs / "flower.log", "ab")  # noqa: SIM115 - closed below
    flower = subprocess.Popen(
        [sys.executable, "-c", "from api.cli import main; main()", "flower", "--port", str(port)],
        env=stack.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with TaskEvents(stack.env["REDIS_URL"]).listening() as events:
            wait_for(lambda: _ok(f"http://127.0.0.1:{port}/healthcheck"), 30, "Flower to answer", stack)
            # Flower asks the workers for events every 5 s; until then they send none.
            deadline = time.monotonic() + 30
            n = 0
            while not events.seen and time.monotonic() < deadline:
                n += 1
                run_quick_mission(stack, f"watched-{n}")
                time.sleep(0.5)
            assert "task-received" in events.seen and "task-succeeded" in events.seen, events.seen

            flower.send_signal(signal.SIGTERM)
            assert flower.wait(30) == 0
            time.sleep(1)  # the disable_events broadcast is sent before Flower's process exits
            events.seen.clear()
            run_quick_mission(stack, "unwatched")
            time.sleep(2)
            assert events.seen == [], "the workers still send task events after Flower stopped"
    finally:
        if flower.poll() is None:
            flower.kill()
            flower.wait(10)
        log.close()
    assert "could not tell the workers" not in (stack.logs / "flower.log").read_text()


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False
