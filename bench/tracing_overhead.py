#!/usr/bin/env python
"""What tracing costs: the hop and throughput of Missions with tracing off, against the same code
before tracing existed, and with tracing on, measured in one run, alternating.

    python bench/tracing_overhead.py                     # baseline: the commit before tracing (BASELINE_COMMIT)
    python bench/tracing_overhead.py --baseline REV      # another revision as the baseline
    python bench/tracing_overhead.py --rounds 5 --quick

Three stacks run side by side, each with its own database (``bench_<random>`` on DATABASE_URL's
server), its own private Redis (the embedded redis-server, so no shared Redis database is
touched), and its own ``missions api``/``worker --concurrency 8``/``beat``:

- ``before``: the code of ``--baseline`` (``git archive`` into a temporary folder), no tracing code;
- ``off``: this checkout, no ``OTEL_*`` variable (tracing off: what every deployment runs unless
  it asks for traces);
- ``on``: this checkout with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at an OTLP/HTTP receiver in
  this process (every span exported).

Each round measures every stack in turn (the order rotates), while the others idle: (a) the hop of
a chain of no-op tasks (agent finished -> next attempt claimed, p50 over the round), (b) throughput
of one mission of independent no-op tasks (tasks / (last finish - first claim)). Then the
off-path cost of the hand-made spans, per call, against a bare ``nullcontext``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from overhead import DEFAULT_DATABASE_URL, Bench, chain_attempts, chain_doc, independent_doc, pct, ts  # noqa: E402

from tests.support.otlp import otlp_receiver  # noqa: E402
from workers.support import tracing  # noqa: E402
from workers.support.embedded import start_redis  # noqa: E402

BASELINE_COMMIT = "876cf9e"  # the last commit before tracing


@dataclass
class Stack(Bench):
    label: str = ""
    code_root: Path = ROOT
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in super().env().items() if not k.startswith("OTEL_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.code_root), os.environ.get("PYTHONPATH", "")]))
        env.update(self.extra_env)
        return env

    def spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.processes[name] = subprocess.Popen(
            argv, env=self.env(), cwd=self.code_root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def hop_p50(stack: Stack, length: int, repeats: int) -> float:
    hops: list[float] = []
    for _ in range(repeats):
        run_id = stack.run_mission(chain_doc(f"chain-{uuid.uuid4().hex[:8]}", length), 300)
        rows = chain_attempts(stack, run_id)
        hops += [ts(b["claimed_at"]) - ts(a["finished_at"]) for a, b in itertools.pairwise(rows)]
    return pct(hops, 50)


def throughput(stack: Stack, tasks: int) -> float:
    run_id = stack.run_mission(independent_doc(f"wide-{uuid.uuid4().hex[:8]}", tasks), 300)
    with stack.connect() as conn:
        row = conn.execute(
            "SELECT min(claimed_at) AS first, max(finished_at) AS last FROM attempts WHERE run_id = %s", (run_id,)
        ).fetchone()
    return tasks / (ts(row["last"]) - ts(row["first"]))


def off_path_nanoseconds(n: int = 200_000) -> tuple[float, float]:
    """Per call: a hand-made span while tracing is off, and a bare nullcontext."""
    assert not tracing.enabled()
    ids = tracing.ids("run_x", None, "task_x", 1)

    def span() -> None:
        with tracing.span("missions.step", ids):
            pass

    def bare() -> None:
        with nullcontext():
            pass

    best_span = min(timeit.repeat(span, number=n, repeat=5)) / n * 1e9
    best_bare = min(timeit.repeat(bare, number=n, repeat=5)) / n * 1e9
    return best_span, best_bare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=BASELINE_COMMIT, help="git revision without tracing")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    args = parser.parse_args(argv)
    chain, repeats, wide = (10, 2, 100) if args.quick else (20, 3, 300)
    admin_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    folder = Path(tempfile.mkdtemp(prefix="missions-tracing-bench-"))
    baseline = folder / "baseline"
    baseline.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive.stdout, check=True)

    stacks: list[Stack] = []
    redis_servers = []
    with otlp_receiver() as receiver:
        try:
            for label, code_root, extra in (
                ("before", baseline, {}),
                ("off", ROOT, {}),
                ("on", ROOT, {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "500"}),
            ):
                workdir = folder / label
                workdir.mkdir()
                server = start_redis(workdir, persist=False)
                redis_servers.append(server)
                stack = Stack(
                    admin_url,
                    server.url,
                    server.url.rsplit("/", 1)[0] + "/1",
                    workdir,
                    label=label,
                    code_root=code_root,
                    extra_env=extra,
                )
                stacks.append(stack)
                stack.setup()
            print(
                f"tracing overhead: {os.cpu_count()} CPUs, baseline {args.baseline}, chain {chain} x {repeats}, "
                f"{wide} independent tasks, {args.rounds} rounds; logs {folder}"
            )
            for stack in stacks:  # warm-up: pools, imports
                stack.run_mission(chain_doc(f"warm-{uuid.uuid4().hex[:6]}", 3), 120)
            hops: dict[str, list[float]] = {s.label: [] for s in stacks}
            tps: dict[str, list[float]] = {s.label: [] for s in stacks}
            for n in range(args.rounds):
                order = stacks[n % 3 :] + stacks[: n % 3]
                for stack in order:
                    hops[stack.label].append(hop_p50(stack, chain, repeats))
                    tps[stack.label].append(throughput(stack, wide))
                print(
                    f"  round {n + 1} ({', '.join(s.label for s in order)}): "
                    + "   ".join(
                        f"{s.label}: hop {hops[s.label][-1] * 1000:.2f} ms, {tps[s.label][-1]:.0f} tasks/s"
                        for s in stacks
                    )
                )
            time.sleep(1.5)
            exported = len(receiver.snapshot())
        finally:
            for stack in stacks:
                stack.teardown()
            for server in redis_servers:
                server.stop()
    print(f"\n  {'':8} {'hop p50 (median of rounds)':>28} {'throughput (median)':>22}")
    for label in ("before", "off", "on"):
        print(
            f"  {label:8} {statistics.median(hops[label]) * 1000:>25.2f} ms {statistics.median(tps[label]):>15.0f} tasks/s"
        )
    base_hop, base_tps = statistics.median(hops["before"]), statistics.median(tps["before"])
    for label in ("off", "on"):
        print(
            f"  {label} vs before: hop {statistics.median(hops[label]) / base_hop - 1:+.1%}, "
            f"throughput {statistics.median(tps[label]) / base_tps - 1:+.1%}"
        )
    print(f"  spans exported by the 'on' stack: {exported}")
    span_ns, bare_ns = off_path_nanoseconds()
    print(f"  off-path cost of a hand-made span: {span_ns:.0f} ns per call (a bare nullcontext: {bare_ns:.0f} ns)")
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
