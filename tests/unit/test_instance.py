"""The data dir's owner (``workers.support.instance``): one at a time, released on exit and by the
kernel when the owner is killed, and its state file believed only while it holds the lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from workers.support import instance


def test_a_second_owner_is_refused_with_the_first_ones_pid_and_url(tmp_path: Path) -> None:
    first = instance.acquire(tmp_path)
    first.write({"url": "http://127.0.0.1:8123"})
    with pytest.raises(instance.DataDirBusy) as refused:
        instance.acquire(tmp_path)
    assert f"pid {os.getpid()}" in str(refused.value) and "http://127.0.0.1:8123" in str(refused.value)
    first.release()
    instance.acquire(tmp_path).release()


def test_the_state_counts_only_while_its_owner_holds_the_lock(tmp_path: Path) -> None:
    assert instance.running(tmp_path) is None
    owner = instance.acquire(tmp_path)
    owner.write({"url": "http://127.0.0.1:8123", "redisUrl": "redis://:secret@127.0.0.1:1/0"})
    state = instance.running(tmp_path)
    assert state is not None and state["url"] == "http://127.0.0.1:8123" and state["pid"] == os.getpid()
    assert (tmp_path / instance.STATE_FILE).stat().st_mode & 0o777 == 0o600
    owner.release()
    assert instance.running(tmp_path) is None
    assert not (tmp_path / instance.STATE_FILE).exists()


def test_a_killed_owner_leaves_the_data_dir_free_and_its_stale_state_ignored(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from workers.support import instance\n"
        "instance.acquire(Path(sys.argv[1])).write({'url': 'http://127.0.0.1:9'})\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        assert instance.running(tmp_path) is not None
        with pytest.raises(instance.DataDirBusy):
            instance.acquire(tmp_path)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert (tmp_path / instance.STATE_FILE).exists()  # left behind by the crash...
    assert instance.running(tmp_path) is None  # ...and not believed
    instance.acquire(tmp_path).release()


def test_redact_url_hides_only_the_password() -> None:
    assert instance.redact_url("redis://:s3cret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert instance.redact_url("postgresql://app:pw@db:5432/missions") == "postgresql://app:***@db:5432/missions"
    assert instance.redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
