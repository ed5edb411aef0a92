"""`missions demo` as a newcomer runs it right after `pip install -e .`: no server, no settings."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from api.cli.demo import demo_mission
from tests.e2e.test_up import processes_using
from tests.integration.test_cli import environment, missions_executable

pytestmark = pytest.mark.e2e


def test_demo_on_its_own_private_stack_completes_every_task_and_cleans_up() -> None:
    env = {k: v for k, v in environment().items() if k not in ("MISSIONS_URL", "MISSIONS_KEY")}
    result = subprocess.run(
        [missions_executable(), "demo"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    titles = [task["title"] for task in demo_mission()["tasks"]]
    for title in titles:
        assert re.search(rf"✓ {re.escape(title)}\s+completed", out), title
    # What the demo is there to show: a retry, a gate resumed with retryFailed, a checkpoint approved.
    retry = 'task "Draft the announcement" pending (writer, attempt 1): [agent_error] the model provider timed out'
    assert retry in out
    assert "quality gate draft quality blocked" in out and "retryFailed=true" in out
    assert 'task "Draft the announcement" completed (writer, attempt 3, score 4.7' in out
    assert "checkpoint reached: The reviewed announcement is ready" in out
    assert re.search(r'mission "demo-release-announcement-\w+" completed', out)

    folder = Path(re.search(r"in (/\S+missions-demo-\S+)", result.stderr).group(1))  # type: ignore[union-attr]
    assert not folder.exists()
    assert processes_using(folder) == []
