"""The executor with real model runtimes against loopback fakes, real Postgres and real Redis:
output batching, required outcomes, judge usage, totals and budgets."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from config import Settings
from config.profiles import ProviderProfile
from tests.support import shell
from tests.support.fake_llm import FakeLLM, call, say
from workers.coordination import advance as coordinator
from workers.coordination import runs
from workers.execution.executor import Executor, OutputBatcher
from workers.execution.providers import Providers
from workers.messaging.dispatch import TASK_QUEUE
from workers.store import missions
from workers.store.projects import ensure_project
from workers.store.usage import mission_usage, run_totals
from workers.support.clock import utcnow
from workers.wiring import Services

KEYS = {"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-test"}
PRICES = '{"openai/writer": {"input": 1, "output": 4}, "anthropic/judge": {"input": 2, "output": 8}}'


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path, llm: FakeLLM) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        data_dir=tmp_path / "data",
        provider_backoff_seconds=0.01,
        prices=PRICES,
        provider_profiles=(
            ProviderProfile("fake-openai", "openai", llm.openai_url),
            ProviderProfile("fake-anthropic", "anthropic", llm.anthropic_url),
        ),
    )


@pytest.fixture
def llm() -> Any:
    with FakeLLM() as fake:
        yield fake


@pytest.fixture
def executor(services: Services) -> Executor:
    return shell.executor(services, "test-worker", Providers(services.settings, environ=KEYS))


def start(
    services: Services, llm: FakeLLM, tasks: list[dict[str, Any]], **fields: Any
) -> tuple[str, dict[str, str], str]:
    agents = [
        {
            "name": "writer",
            "role": "Writes",
            "model": "openai/writer",
            "profile": "fake-openai",
            "tools": ["write_file"],
        }
    ]
    for task in tasks:
        task.setdefault("description", f"Do {task['title']}")
        task.setdefault("assignTo", "writer")
    document = {
        "name": "m",
        "prompt": "Mission prompt",
        "tasks": tasks,
        "team": {"name": "crew", "volatile": True, "agents": agents},
        **fields,
    }
    with services.transaction() as conn:
        project = ensure_project(conn, "p")
        limits = missions.Limits.from_settings(services.settings)
        mission = missions.create_mission(conn, project, document, limits)
        run_id, *_ = runs.execute(shell.uow(conn), project, mission.id, limits, utcnow())
    return run_id, {t.title: t.id for t in mission.tasks}, mission.id


def events(db: psycopg.Connection, run_id: str, kind: str) -> list[dict[str, Any]]:
    rows = db.execute("SELECT data FROM events WHERE run_id = %s AND type = %s ORDER BY id", (run_id, kind)).fetchall()
    return [r["data"] for r in rows]


def attempt_row(db: psycopg.Connection, run_id: str, task_id: str, attempt: int = 1) -> dict[str, Any]:
    return db.execute(
        "SELECT * FROM attempts WHERE run_id = %s AND task_id = %s AND attempt = %s", (run_id, task_id, attempt)
    ).fetchone()


def test_a_fast_stream_becomes_at_most_about_ten_output_events_a_second(
    services: Services, executor: Executor, llm: FakeLLM, db: psycopg.Connection
) -> None:
    words = [f"w{i} " for i in range(300)]
    llm.script("writer", say("".join(words).strip(), chunks=words, chunk_delay=0.005))
    run_id, ids, _ = start(services, llm, [{"title": "Stream"}])
    started = time.monotonic()
    assert executor.run_attempt(run_id, ids["Stream"], 1) == "finished"
    elapsed = time.monotonic() - started
    outputs = events(db, run_id, "task:output")
    assert "".join(o["chunk"] for o in outputs).strip() == "".join(words).strip()
    assert len(outputs) <= elapsed * 10 + 2, (len(outputs), elapsed)
    assert len(outputs) >= 3  # streamed while it ran, not in one lump at the end
    print(
        f"\n{len(words)} chunks in {elapsed:.2f} s became {len(outputs)} task:output events "
        f"({len(outputs) / elapsed:.1f}/s)"
    )


def test_the_batcher_sends_the_first_chunk_at_once_and_keeps_order() -> None:
    sent: list[tuple[float, str]] = []
    batcher = OutputBatcher(lambda text: sent.append((time.monotonic(), text)), interval=0.1)
    began = time.monotonic()
    for i in range(50):
        batcher.add(f"{i},")
        time.sleep(0.004)
    batcher.close()
    assert sent[0][0] - began < 0.05 and sent[0][1] == "0,"
    assert "".join(text for _, text in sent) == "".join(f"{i}," for i in range(50))
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(sent)]
    assert all(gap >= 0.09 for gap in gaps[:-1])  # the last send is close()'s own


def test_a_missing_required_file_fails_the_attempt_and_the_retry_is_told_why(
    services: Services, executor: Executor, llm: FakeLLM, db: psycopg.Connection
) -> None:
    llm.script(
        "writer",
        say("I wrote nothing."),
        call("write_file", {"path": "out/report.md", "content": "# Report"}),
        say("Report written."),
    )
    run_id, ids, _ = start(
        services,
        llm,
        [
            {
                "title": "Report",
                "maxRetries": 1,
                "expectedOutcomes": [{"name": "report", "type": "file", "path": "out/report.md", "required": True}],
            }
        ],
    )
    assert executor.run_attempt(run_id, ids["Report"], 1) == "failed"
    first = attempt_row(db, run_id, ids["Report"], 1)
    assert first["error"] == "required outcome 'report' was not produced: no file 'out/report.md' in the workspace"
    assert executor.run_attempt(run_id, ids["Report"], 2) == "finished"
    second = attempt_row(db, run_id, ids["Report"], 2)
    assert second["status"] == "completed"
    assert second["outcomes"] == [{"type": "file", "path": "out/report.md", "characters": 8}]
    assert "required outcome 'report' was not produced" in second["prompt"]
    assert "- report (file at out/report.md, required)" in second["prompt"]
    assert db.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()["status"] == "completed"


def test_judge_usage_is_kept_apart_and_totals_add_up_per_task_run_and_mission(
    services: Services, executor: Executor, llm: FakeLLM, db: psycopg.Connection
) -> None:
    llm.script("writer", say("draft one", usage=(1000, 100)), say("draft two", usage=(2000, 200)))
    llm.script(
        "judge",
        call("submit_scores", {"scores": [{"index": 1, "score": 2, "reason": "too thin"}]}, usage=(500, 50)),
        call("submit_scores", {"scores": [{"index": 1, "score": 5, "reason": "solid"}]}, usage=(600, 60)),
    )
    run_id, ids, mission_id = start(
        services,
        llm,
        [{"title": "Draft", "expectations": [{"criterion": "Is solid"}]}],
        assessor={"model": "anthropic/judge", "profile": "fake-anthropic"},
    )
    assert executor.run_attempt(run_id, ids["Draft"], 1) == "finished"
    assessment = events(db, run_id, "task:assessment")[0]
    assert assessment["score"] == 2.0 and assessment["passed"] is False
    assert assessment["criteria"] == [
        {"type": "criterion", "criterion": "Is solid", "score": 2.0, "reason": "too thin", "weight": 1.0}
    ]
    assert executor.run_attempt(run_id, ids["Draft"], 2) == "finished"
    assert "Assessor on Is solid (score 2): too thin" in llm.seen("writer")[1].text
    row = attempt_row(db, run_id, ids["Draft"], 1)
    assert (row["tokens_in"], row["tokens_out"], row["cost_usd"]) == (1000, 100, pytest.approx(0.0014))
    assert (row["judge_model"], row["judge_tokens_in"], row["judge_tokens_out"]) == ("anthropic/judge", 500, 50)
    assert row["judge_cost_usd"] == pytest.approx(0.0014)
    assert row["assessment"]["judge"] == "anthropic/judge"

    with services.transaction() as conn:
        usage = mission_usage(conn, mission_id)
        totals = run_totals(conn, run_id)
    expected_cost = (3000 * 1 + 300 * 4 + 1100 * 2 + 110 * 8) / 1e6
    assert usage.total == usage.run(run_id) == usage.task(run_id, ids["Draft"]) == totals
    assert (totals.tokens_in, totals.tokens_out, totals.attempts) == (4100, 410, 2)
    assert totals.cost_usd == pytest.approx(expected_cost)
    assert totals.to_json() == {"tokensIn": 4100, "tokensOut": 410, "costUsd": round(expected_cost, 6), "attempts": 2}


def test_usage_of_a_mission_without_runs_is_zero(services: Services, llm: FakeLLM) -> None:
    with services.transaction() as conn:
        project = ensure_project(conn, "p")
        mission = missions.create_mission(
            conn,
            project,
            {
                "name": "idle",
                "tasks": [{"title": "t", "description": "d", "assignTo": "a"}],
                "team": {"name": "c", "agents": [{"name": "a", "model": "scripted/x"}]},
            },
            missions.Limits.from_settings(services.settings),
        )
        usage = mission_usage(conn, mission.id)
    assert usage.total.to_json() == {"tokensIn": 0, "tokensOut": 0, "costUsd": 0.0, "attempts": 0}
    assert usage.runs == {} and usage.tasks == {}


def test_going_over_the_token_budget_stops_the_run_and_cancels_the_rest(
    services: Services, executor: Executor, llm: FakeLLM, db: psycopg.Connection
) -> None:
    llm.script("writer", say("expensive", usage=(900, 200)))
    run_id, ids, mission_id = start(
        services, llm, [{"title": "A"}, {"title": "B"}, {"title": "C", "dependsOn": ["A"]}], budget={"maxTokens": 1000}
    )
    assert executor.run_attempt(run_id, ids["A"], 1) == "finished"
    run = db.execute("SELECT status, failure_reason FROM runs WHERE id = %s", (run_id,)).fetchone()
    assert (run["status"], run["failure_reason"]) == ("failed", "budget_exceeded")
    statuses = {
        r["task_id"]: r["status"]
        for r in db.execute("SELECT task_id, status FROM attempts WHERE run_id = %s", (run_id,)).fetchall()
    }
    # C became ready when A finished, and was cancelled in the same transaction: never sent.
    assert statuses == {ids["A"]: "completed", ids["B"]: "cancelled", ids["C"]: "cancelled"}
    assert services.redis.llen(TASK_QUEUE) == 0  # (start() sends nothing; the worker does the rest)
    done = events(db, run_id, "mission:done")
    assert done[0]["reason"] == "budget_exceeded" and done[0]["status"] == "failed"
    mission = db.execute("SELECT status FROM missions WHERE id = %s", (mission_id,)).fetchone()
    assert mission["status"] == "failed"
    assert executor.run_attempt(run_id, ids["B"], 1).startswith("not claimed")


def test_an_attempt_waiting_for_its_judge_when_the_run_ends_is_not_judged(
    services: Services, executor: Executor, llm: FakeLLM, db: psycopg.Connection
) -> None:
    llm.script("writer", say("done"))
    llm.script("judge", call("submit_scores", {"scores": [{"index": 1, "score": 5, "reason": "fine"}]}))
    run_id, ids, _ = start(
        services,
        llm,
        [{"title": "A", "expectations": [{"criterion": "ok"}]}],
        assessor={"model": "anthropic/judge", "profile": "fake-anthropic"},
    )
    executor.assess = lambda *args: None  # type: ignore[method-assign]  # the judge's message is "in flight"
    assert executor.run_attempt(run_id, ids["A"], 1) == "finished"
    with services.transaction() as conn:
        aborted = _abort(conn, run_id)
    executor.coordinator.after_commit(aborted)
    del executor.assess
    assert executor.assess(run_id, ids["A"], 1) == "not assessed: the run is over"
    assert attempt_row(db, run_id, ids["A"])["status"] == "cancelled"
    assert llm.seen("judge") == []


def _abort(conn: psycopg.Connection, run_id: str) -> coordinator.AfterCommit | None:
    from orchestrator.engine import AbortRequested

    return coordinator.step(conn, run_id, AbortRequested(), utcnow())
