"""The client commands (`missions run|list|show|resume|review|task|abort|events`) and `/metrics`, against real
API, worker and beat processes. One stack serves the whole module."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from psycopg.rows import dict_row

from tests.conftest import with_database
from tests.e2e.conftest import stack_env
from tests.e2e.scenarios import agent, mission
from tests.integration.test_cli import environment, missions_executable
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def shared_stack(
    postgres_server_url: str, template_database: str, redis_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    from workers.store.projects import create_key

    name = f"missions_cli_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template_database))
        )
    database_url = with_database(postgres_server_url, name)
    redis.Redis.from_url(redis_server_url).flushdb()
    folder = tmp_path_factory.mktemp("cli")
    logs = folder / "logs"
    logs.mkdir()
    stack = Stack(env=stack_env(database_url, redis_server_url, folder / "data"), logs=logs)
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        stack.key = create_key(conn, "cli")
    try:
        stack.start_worker(concurrency=8)
        stack.start_beat()
        stack.start_api()
        yield stack
    finally:
        stack.stop()
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def cli(stack: Stack, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in environment().items() if k not in ("MISSIONS_URL", "MISSIONS_KEY")}
    return subprocess.run(
        [missions_executable(), *args, "--url", stack.url, "--key", stack.key],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write(tmp_path: Path, name: str, document: dict[str, Any], *, as_yaml: bool = False) -> str:
    path = tmp_path / (f"{name}.yaml" if as_yaml else f"{name}.json")
    path.write_text(yaml.safe_dump(document, sort_keys=False) if as_yaml else json.dumps(document))
    return str(path)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_run_exits_0_and_shows_every_task_when_the_mission_completes(shared_stack: Stack, tmp_path: Path) -> None:
    doc = mission(
        unique("ok"),
        [{"title": "Plan", "assignTo": "a"}, {"title": "Build", "assignTo": "a", "dependsOn": ["Plan"]}],
        [agent("a", {"outputChunks": ["step one\n", "step two\n"]})],
    )
    result = cli(shared_stack, "run", write(tmp_path, "ok", doc), "--follow-output")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert 'task "Plan" completed (a, attempt 1' in out and 'task "Build" completed (a, attempt 1' in out
    assert "Build | step two" in out  # --follow-output streams the agent's output
    assert out.index('task "Plan" completed') < out.index('task "Build" running')
    assert "completed" in out.splitlines()[-3]  # the closing mission line, then one summary line per task


def test_run_exits_1_when_the_mission_fails(shared_stack: Stack, tmp_path: Path) -> None:
    doc = mission(
        unique("broken"),
        [{"title": "Doomed", "assignTo": "a", "maxRetries": 1}],
        [agent("a", {"fail": "the tool crashed"})],
        deadline="2099-01-01T00:00:00Z",
    )
    path = write(tmp_path, "broken", doc, as_yaml=True)
    text = Path(path).read_text().replace("'2099-01-01T00:00:00Z'", "2099-01-01T00:00:00Z")
    Path(path).write_text(text)  # an unquoted YAML timestamp, which YAML reads as a datetime
    result = cli(shared_stack, "run", path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'task "Doomed" failed (a, attempt 2' in result.stdout and "the tool crashed" in result.stdout


def test_run_exits_2_when_the_mission_pauses_and_resume_follow_finishes_it(shared_stack: Stack, tmp_path: Path) -> None:
    doc = mission(
        unique("checked"),
        [{"title": "Stage", "assignTo": "a"}, {"title": "Prod", "assignTo": "b", "dependsOn": ["Stage"]}],
        [agent("a", {"output": "ok", "delay": 1.0}), agent("b", {"output": "ok"})],
        checkpoints=[{"afterTasks": ["Stage"], "blocksTasks": ["Prod"], "message": "Ship to prod?"}],
    )
    result = cli(shared_stack, "run", write(tmp_path, "checked", doc))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "paused (checkpoint): Ship to prod?" in result.stdout
    mission_id = next(m["id"] for m in shared_stack.request("GET", "/v1/missions").json() if m["name"] == doc["name"])
    # The exact command that goes on (this server is not the one a later command finds by itself).
    assert f"missions resume {mission_id} --url {shared_stack.url} --follow" in result.stderr
    [first_stage] = [line for line in result.stdout.splitlines() if 'task "Stage" completed' in line]

    time.sleep(1.5)  # so that a replay stamped with the time it is read would show a later time
    resumed = cli(shared_stack, "resume", mission_id, "--follow")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert 'task "Prod" completed' in resumed.stdout
    assert 'task "Stage" completed' not in resumed.stdout.split("mission active")[-1]  # no replay shown as new
    # The replayed task shows when it really ran and for how long, not "now" and 0.0s.
    [replayed] = [line for line in resumed.stdout.splitlines() if 'task "Stage" completed' in line]
    assert replayed == first_stage
    seconds = float(re.search(r"attempt 1, ([0-9.]+)s\)", replayed).group(1))  # type: ignore[union-attr]
    assert 1.0 <= seconds < 5.0, replayed
    [summary] = [line for line in resumed.stdout.splitlines() if line.strip().startswith("✓ Stage")]
    assert f"{seconds:.1f}s" in summary


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# What `missions run` of each file in examples/ ends with (the README and the files' comments say so).
EXAMPLE_EXITS = {"hello.yaml": 0, "release-with-review.yaml": 2}


def test_every_example_file_is_run_by_the_test_below() -> None:
    assert sorted(p.name for p in EXAMPLES.iterdir() if p.suffix in (".yaml", ".yml", ".json")) == sorted(EXAMPLE_EXITS)


@pytest.mark.parametrize("name", sorted(EXAMPLE_EXITS))
def test_each_example_runs_with_missions_run(shared_stack: Stack, name: str) -> None:
    mission_name = unique(Path(name).stem)
    result = cli(shared_stack, "run", str(EXAMPLES / name), "--name", mission_name)
    assert result.returncode == EXAMPLE_EXITS[name], result.stdout + result.stderr
    if EXAMPLE_EXITS[name] == 2:
        mission_id = next(
            m["id"] for m in shared_stack.request("GET", "/v1/missions").json() if m["name"] == mission_name
        )
        assert f"missions resume {mission_id} --url {shared_stack.url} --follow" in result.stderr
        resumed = cli(shared_stack, "resume", mission_id, "--follow")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr


def test_a_failed_mission_is_continued_by_resume_retry_failed_follow_and_a_task_by_task_retry(
    shared_stack: Stack, tmp_path: Path
) -> None:
    doc = mission(
        unique("again"),
        [
            {"title": "Flaky", "assignTo": "f", "maxRetries": 0},
            {"title": "After", "assignTo": "a", "dependsOn": ["Flaky"]},
            {"title": "Steady", "assignTo": "a"},
        ],
        [agent("f", {"fail": "first try breaks"}, {"fail": "second try breaks"}, {"output": "fixed"}), agent("a")],
    )
    assert cli(shared_stack, "run", write(tmp_path, "again", doc)).returncode == 1
    mission_id = next(m["id"] for m in shared_stack.request("GET", "/v1/missions").json() if m["name"] == doc["name"])
    retried = cli(shared_stack, "task", "retry", mission_id, "Flaky")
    assert retried.returncode == 0 and retried.stdout.strip() == f'{mission_id} task "Flaky" queued', retried.stderr
    shared_stack.wait_status(mission_id, "failed")  # the second try breaks too
    resumed = cli(shared_stack, "resume", mission_id, "--retry-failed", "--follow")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr  # followed past the earlier mission:done
    assert 'task "After" completed' in resumed.stdout
    final = shared_stack.mission(mission_id)
    assert final["status"] == "completed" and final["executionCount"] == 1
    assert shared_stack.tasks(final)["Steady"]["attempt"] == 1  # completed before: not run again


def test_review_requests_changes_then_approves(shared_stack: Stack, tmp_path: Path) -> None:
    doc = mission(
        unique("reviewed"),
        [{"title": "Draft", "assignTo": "a"}, {"title": "Publish", "assignTo": "a", "dependsOn": ["Draft"]}],
        [agent("a", {"output": "v1"}, {"output": "v2"})],
        checkpoints=[{"afterTasks": ["Draft"], "blocksTasks": ["Publish"], "message": "Good to publish?"}],
    )
    assert cli(shared_stack, "run", write(tmp_path, "reviewed", doc)).returncode == 2
    mission_id = next(m["id"] for m in shared_stack.request("GET", "/v1/missions").json() if m["name"] == doc["name"])
    bad = cli(shared_stack, "review", mission_id, "--approve", "--reject", "no")
    assert bad.returncode == 2 and "exactly one of" in bad.stderr
    sent_back = cli(shared_stack, "review", mission_id, "--request-changes", "Shorter, please.", "--redo", "Draft")
    # (the redo may already have reached the checkpoint again when the answer is rendered)
    assert sent_back.returncode == 0, sent_back.stderr
    assert sent_back.stdout.strip() in (f"{mission_id} active", f"{mission_id} paused")
    paused = shared_stack.wait_status(mission_id, "paused")
    assert shared_stack.tasks(paused)["Draft"]["output"] == "v2"
    assert cli(shared_stack, "review", mission_id, "--approve").returncode == 0
    assert shared_stack.wait_status(mission_id, "completed", "failed")["status"] == "completed"


def test_run_exits_3_when_the_mission_is_aborted(shared_stack: Stack, tmp_path: Path) -> None:
    doc = mission(unique("long"), [{"title": "Sleep", "assignTo": "a"}], [agent("a", {"delay": 60})])
    env = {k: v for k, v in environment().items() if k not in ("MISSIONS_URL", "MISSIONS_KEY")}
    runner = subprocess.Popen(
        [
            missions_executable(),
            "run",
            write(tmp_path, "long", doc),
            "--url",
            shared_stack.url,
            "--key",
            shared_stack.key,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def running() -> bool:
            for row in shared_stack.request("GET", "/v1/missions").json():
                if row["name"] == doc["name"]:
                    return bool(shared_stack.tasks(shared_stack.mission(row["id"]))["Sleep"]["status"] == "running")
            return False

        wait_for(running, 30, "the task to run", shared_stack)
        mission_id = next(
            m["id"] for m in shared_stack.request("GET", "/v1/missions").json() if m["name"] == doc["name"]
        )
        aborted = cli(shared_stack, "abort", mission_id, "--json")
        assert aborted.returncode == 0 and json.loads(aborted.stdout)["status"] == "cancelled"
        out, err = runner.communicate(timeout=30)
        assert runner.returncode == 3, out + err
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


def test_list_show_and_events_print_json_for_scripts(shared_stack: Stack, tmp_path: Path) -> None:
    doc = mission(unique("listed"), [{"title": "Only", "assignTo": "a"}], [agent("a", {"output": "done"})])
    detached = cli(shared_stack, "run", write(tmp_path, "listed", doc), "--detach", "--json")
    assert detached.returncode == 0, detached.stderr
    mission_id = json.loads(detached.stdout)["missionId"]
    shared_stack.wait_status(mission_id, "completed", "failed")

    listed = cli(shared_stack, "list", "--json", "--status", "completed")
    assert listed.returncode == 0 and mission_id in [m["id"] for m in json.loads(listed.stdout)]
    shown = cli(shared_stack, "show", mission_id, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["tasks"][0]["status"] == "completed"
    human = cli(shared_stack, "show", mission_id)
    assert "✓ Only  completed" in human.stdout
    events = cli(shared_stack, "events", mission_id, "--json")
    lines = [json.loads(line) for line in events.stdout.splitlines()]
    assert lines[0]["event"] == "mission:status" and lines[-1]["event"] == "mission:done"
    assert [e["id"] for e in lines] == sorted(e["id"] for e in lines)
    after = cli(shared_stack, "events", mission_id, "--json", "--after", str(lines[1]["id"]))
    assert [json.loads(line)["id"] for line in after.stdout.splitlines()] == [e["id"] for e in lines[2:]]

    missing = cli(shared_stack, "show", "msn_doesnotexist")
    assert missing.returncode == 4 and "not_found" in missing.stderr


def scrape(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(f"{stack.url}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_move_while_missions_run(shared_stack: Stack) -> None:
    time.sleep(1.5)  # the counters of the tests before have reached Redis (flushed once a second)
    before = scrape(shared_stack)
    doc = mission(
        unique("measured"),
        [
            {"title": "One", "assignTo": "a", "expectations": [{"criterion": "good"}]},
            {"title": "Two", "assignTo": "a", "dependsOn": ["One"]},
        ],
        [agent("a", {"delay": 0.2, "output": "fine"})],
        assessor={"model": "scripted/judge", "script": [{"score": 4.5, "reason": "good"}]},
        checkpoints=[{"afterTasks": ["Two"], "message": "Look"}],
    )
    created = shared_stack.create(doc)
    shared_stack.execute(created["id"])
    shared_stack.wait_status(created["id"], "paused")
    with requests.get(
        f"{shared_stack.url}/v1/missions/{created['id']}/events", headers=shared_stack.headers, stream=True, timeout=10
    ) as stream:
        assert stream.status_code == 200
        during = scrape(shared_stack)
    assert during[("missions_sse_clients", ())] >= 1
    assert (
        during[("missions_missions", (("status", "paused"),))]
        == before[("missions_missions", (("status", "paused"),))] + 1
    )
    assert during[("missions_tasks", (("status", "completed"),))] >= 2
    shared_stack.request("POST", f"/v1/missions/{created['id']}/resume", json={})
    shared_stack.wait_status(created["id"], "completed")
    after: dict[Any, float] = {}

    def counted() -> bool:  # the workers flush their counters to Redis once a second
        after.update(scrape(shared_stack))
        return all(
            after[(name, ())] >= before[(name, ())] + n
            for name, n in (
                ("missions_assessment_score_count", 1),
                ("missions_attempts_total", 2),
                ("missions_task_duration_seconds_count", 2),
                ("missions_task_queue_wait_seconds_count", 2),
            )
        )

    wait_for(counted, 10, "the workers' counters to reach /metrics", shared_stack)
    assert (
        after[("missions_task_duration_seconds_count", ())] >= before[("missions_task_duration_seconds_count", ())] + 2
    )
    assert after[("missions_task_duration_seconds_sum", ())] >= before[("missions_task_duration_seconds_sum", ())] + 0.4
    assert (
        after[("missions_task_queue_wait_seconds_count", ())]
        >= before[("missions_task_queue_wait_seconds_count", ())] + 2
    )
    assert after[("missions_assessment_score_count", ())] == before[("missions_assessment_score_count", ())] + 1
    assert after[("missions_attempts_total", ())] >= before[("missions_attempts_total", ())] + 2
    assert after[("missions_missions", (("status", "completed"),))] >= 1
    assert after[("missions_tick_lag_seconds", ())] < 5


def test_a_chain_of_quick_tasks_is_handed_off_from_thread_to_thread(shared_stack: Stack) -> None:
    """Through the real worker: each dependent ran in the thread of the task before it (the eager
    hand-off), counted on /metrics, and the run is complete as any other."""
    time.sleep(1.5)  # the counters of the tests before have reached Redis (flushed once a second)
    before = scrape(shared_stack)[("missions_attempts_handed_off_total", ())]
    titles = ["One", "Two", "Three", "Four"]
    tasks = [
        {"title": t, "assignTo": "a", **({"dependsOn": [titles[i - 1]]} if i else {})} for i, t in enumerate(titles)
    ]
    created = shared_stack.create(mission(unique("chain"), tasks, [agent("a", {"output": "done"})]))
    shared_stack.execute(created["id"])
    final = shared_stack.wait_status(created["id"], "completed", "failed", timeout=60)
    assert final["status"] == "completed"
    after: dict[Any, float] = {}

    def counted() -> bool:
        after.update(scrape(shared_stack))
        return after[("missions_attempts_handed_off_total", ())] >= before + 3

    wait_for(counted, 10, "three hand-offs on /metrics", shared_stack)
