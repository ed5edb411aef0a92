"""The fault-injection suite (``bench/chaos.py``), short form with tight sizes: while missions run,
workers are killed with SIGKILL and restarted, Redis is killed and restarted empty, every Postgres
backend of the run's database is terminated and the API is killed under SSE followers; afterwards
the delivery guarantees must hold. The script runs as a subprocess (its own database on the test
Postgres server, its own Redis, fake LLM and processes) and writes its figures as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.chaos

ROOT = Path(__file__).resolve().parents[2]
TIGHT = [
    "--short",
    "--missions", "16",
    "--followers", "6",
    "--worker-kills", "3",
    "--redis-restarts", "1",
    "--pg-terminations", "1",
    "--api-restarts", "1",
    "--fault-gap", "4",
    "--settle", "75",
]  # fmt: skip


def test_delivery_guarantees_hold_under_faults(postgres_server_url: str, tmp_path: Path) -> None:
    figures = tmp_path / "chaos.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MISSIONS_")}
    env["DATABASE_URL"] = postgres_server_url
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), *TIGHT, "--json", str(figures)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    output = f"--- stdout\n{done.stdout[-6000:]}\n--- stderr\n{done.stderr[-6000:]}"
    assert figures.exists(), output
    report = json.loads(figures.read_text())
    missions, sse = report["missions"], report["sse"]

    # The invariants (the script's exit status is 0 only when all of them hold).
    assert report["stuck"] == 0, output
    assert report["lost"] == 0, output
    assert report["blind_side_effect_reruns"] == 0, output
    assert sse["gaps"] == 0 and sse["duplicates"] == 0, output
    assert done.returncode == 0, output
    # Every mission ran and settled; a mission pauses only for a side-effect task whose worker died
    # mid-call, and such a task's agent was called at most once.
    assert missions["never_executed"] == 0 and report["still_running"] == 0, output
    assert missions["completed"] + missions["paused"] == missions["total"], output
    assert set(missions["paused_reasons"]) <= {"approval"}, output
    assert report["awaiting_approval"] >= missions["paused"], output
    assert report["awaiting_approval_not_side_effects"] == 0, output
    assert "2+" not in report["awaiting_approval_by_calls"], output
    # A duplicate delivery never reaches the agent, and every call belongs to a claimed attempt.
    assert report["extra_agent_calls"] == 0 and report["unattributed_calls"] == 0, output
    # The followers saw the whole log of their runs, payloads included, in order.
    assert sse["mismatched_payloads"] == 0 and sse["out_of_order"] == 0 and sse["crashed_followers"] == 0, output
    # Every fault was followed by work completing again.
    assert all(f["next_fresh_completion_s"] is not None for f in report["faults"]), output
    # No worker gave up (a Redis restart used to make Celery exit a worker with an unrecoverable error).
    assert report["from_the_logs"]["worker_unrecoverable_errors"] == 0, output
