"""The ``missions up`` that owns a data dir, and what it tells the other commands.

``missions up`` holds an exclusive ``flock`` on ``<data_dir>/up.lock`` for as long as it runs: a
second ``missions up`` on the same folder cannot take it and refuses, naming the first. The lock
belongs to the open file, so the kernel releases it when the owner exits, however it ends (a
``kill -9`` or a crash included); the file itself stays and means nothing on its own.

Next to it the owner keeps ``<data_dir>/up.json`` (0600: it holds the embedded Redis' password):
its pid, the API and dashboard URLs and the Postgres and Redis URLs its processes use. Client
commands, ``missions status`` and ``celery -A workers.wiring`` read it to find the running server,
the way they find its key; the file counts only while its lock is held (``running``), so a
leftover of a crashed start is never mistaken for a server.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

LOCK_FILE = "up.lock"
STATE_FILE = "up.json"
ACQUIRE_TRIES = 10


class DataDirBusy(Exception):
    """Another process owns the data dir; ``holder`` is what it wrote about itself (may be empty)."""

    def __init__(self, data_dir: Path, holder: dict[str, Any]) -> None:
        pid = holder.get("pid")
        url = holder.get("url")
        who = f"pid {pid}" if pid else "another process"
        where = f", serving {url}" if url else ""
        super().__init__(
            f"{data_dir} is in use by another `missions up` ({who}{where}); stop it first, "
            "or pass another --data-dir (MISSIONS_DATA_DIR)"
        )
        self.data_dir = data_dir
        self.holder = holder


@dataclass
class Ownership:
    """The held lock of one data dir (``acquire``); ``write`` publishes what the owner runs."""

    data_dir: Path
    fd: int

    def write(self, state: dict[str, Any]) -> None:
        """Replace ``up.json`` atomically (readers never see half a file), mode 0600."""
        path = self.data_dir / STATE_FILE
        temporary = path.with_name(f".{STATE_FILE}.{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"pid": os.getpid(), "startedAt": time.time(), **state}, out, indent=2)
        os.replace(temporary, path)

    def release(self) -> None:
        """Remove ``up.json`` and let go of the lock (the lock file stays: removing it would race a
        second owner that opened it meanwhile)."""
        if self.fd < 0:
            return
        try:
            (self.data_dir / STATE_FILE).unlink(missing_ok=True)
        finally:
            os.close(self.fd)  # closing the only descriptor of the open file releases the flock
            self.fd = -1


def acquire(data_dir: Path) -> Ownership:
    """Take ``data_dir`` for this process, or raise ``DataDirBusy`` naming its owner."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        # ``running`` takes a shared lock for a moment to look: try a few times before refusing.
        for _ in range(ACQUIRE_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return Ownership(data_dir, fd)
            except BlockingIOError:
                time.sleep(0.05)
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    raise DataDirBusy(data_dir, read_state(data_dir))


def running(data_dir: Path) -> dict[str, Any] | None:
    """What the ``missions up`` owning ``data_dir`` wrote about itself, or None when none runs."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_state(data_dir)  # held: an owner runs
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def read_state(data_dir: Path) -> dict[str, Any]:
    """``up.json`` as written (empty when missing, unreadable or not yet written)."""
    try:
        value = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def redact_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (for printing)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
