"""End to end on the real provider path: real API, worker and beat processes whose agents and
judges talk, through the official SDKs, to loopback fakes of the OpenAI and Anthropic APIs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from psycopg.rows import dict_row

from tests.e2e.conftest import running_stack
from tests.support.fake_llm import FakeLLM, call, fail, say
from tests.support.stack import Stack, wait_for
from workers.store.usage import mission_usage

pytestmark = pytest.mark.e2e

PRICES = (
    '{"openai/reviewer": {"input": 3, "output": 15}, "anthropic/lead": {"input": 1, "output": 5}, '
    '"openai/judge": {"input": 0.5, "output": 1.5}}'
)


@pytest.fixture
def stack(database_url: str, redis_url: str, tmp_path: Path, llm: FakeLLM) -> Iterator[Stack]:
    """API, worker and beat with provider keys in their environment (the fakes ignore them), and the
    operator's provider profiles "fake-openai" and "fake-anthropic" pointing at the fakes."""
    profiles = {
        "fake-openai": {"provider": "openai", "baseUrl": llm.openai_url},
        "fake-anthropic": {"provider": "anthropic", "baseUrl": llm.anthropic_url},
    }
    env = {
        "OPENAI_API_KEY": "sk-test-openai",
        "ANTHROPIC_API_KEY": "sk-test-anthropic",
        "MISSIONS_PROVIDER_PROFILES": json.dumps(profiles),
        "MISSIONS_EGRESS_ALLOW": "127.0.0.1",  # the fakes' tools endpoint is on loopback
        "MISSIONS_PROVIDER_BACKOFF_SECONDS": "0.05",
        "MISSIONS_PRICES": PRICES,
    }
    with running_stack(database_url, redis_url, tmp_path, env) as running:
        yield running


def db_rows(stack: Stack, query: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(stack.env["DATABASE_URL"], row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchall()


def team(*agents: dict[str, Any]) -> dict[str, Any]:
    return {"name": "crew", "volatile": True, "agents": list(agents)}


def test_a_review_pipeline_on_real_sdks_uses_tools_passes_output_downstream_and_is_scored_and_priced(
    stack: Stack, llm: FakeLLM, tmp_path: Path
) -> None:
    llm.page("/pr/42.diff", "- query = 'SELECT * FROM users WHERE name = ' + name")
    llm.script(
        "reviewer",
        call("http_request", {"url": f"{llm.url}/pr/42.diff"}, text="Fetching the diff.", usage=(600, 40)),
        call("write_file", {"path": "review.md", "content": "SQL injection in login()"}, usage=(700, 50)),
        say("Found a SQL injection in login(): use a parameterised query.", usage=(800, 60)),
    )
    llm.script("lead", say("Request changes: fix the SQL injection first.", usage=(900, 70)))
    llm.script(
        "judge",
        say("The review looks thorough to me."),  # prose: the judge is asked to repair it
        call(
            "submit_scores",
            {
                "scores": [
                    {"index": 1, "score": 5, "reason": "the injection is found"},
                    {"index": 2, "score": 4, "reason": "says how to fix it"},
                ]
            },
            usage=(300, 30),
        ),
    )
    document = {
        "name": "code-review-pipeline",
        "prompt": "Review the latest PR and provide feedback.",
        "qualityThreshold": 4.0,
        "tasks": [
            {
                "title": "Analyze code changes",
                "assignTo": "code-reviewer",
                "description": (
                    "Review the diff for the latest PR. Check for bugs, security issues, and style violations."
                ),
                "expectations": [
                    {"criterion": "All critical issues identified"},
                    {"criterion": "Feedback is actionable and specific"},
                ],
                "expectedOutcomes": [{"name": "notes", "type": "file", "path": "review.md", "required": True}],
            },
            {
                "title": "Write review summary",
                "assignTo": "tech-lead",
                "dependsOn": ["Analyze code changes"],
                "description": "Compile the analysis into a structured review summary.",
            },
        ],
        "team": team(
            {
                "name": "code-reviewer",
                "role": "Senior code reviewer",
                "model": "openai/reviewer",
                "profile": "fake-openai",
                "tools": ["http_request", "write_file"],
                "allowedHosts": ["127.0.0.1"],
            },
            {
                "name": "tech-lead",
                "role": "Technical lead",
                "model": "anthropic/lead",
                "profile": "fake-anthropic",
                "systemPrompt": "Be decisive.",
            },
        ),
        "assessor": {"model": "openai/judge", "profile": "fake-openai"},
    }
    created = stack.create(document)
    events = stack.execute_streaming(created["id"])
    assert events[-1].event == "mission:done" and events[-1].data["status"] == "completed", stack.log_tail()
    run_id = events[-1].data["runId"]
    ids = {t["title"]: t["id"] for t in stack.mission(created["id"])["tasks"]}

    # Tool loop: the diff came back in the second request, the file was written and recorded.
    reviewer = llm.seen("reviewer")
    assert len(reviewer) == 3 and "SELECT * FROM users" in reviewer[1].text
    assert (tmp_path / "data" / "workspaces" / run_id / "review.md").read_text() == "SQL injection in login()"
    # Upstream output reached the downstream prompt, with the mission prompt and the role.
    lead = llm.seen("lead")[0]
    assert "Found a SQL injection in login(): use a parameterised query." in lead.text
    assert "Review the latest PR and provide feedback." in lead.text
    assert lead.body["system"] == "Technical lead\n\nBe decisive."
    # Streamed output arrived as task:output events, batched.
    streamed = [e.data for e in events if e.event == "task:output" and e.data["taskId"] == ids["Analyze code changes"]]
    assert "".join(e["chunk"] for e in streamed).endswith("use a parameterised query.")
    # The judge's prose was repaired, and its per-criterion scores and reasons were kept.
    assert "Your answer could not be used" in llm.seen("judge")[1].text
    assessment = next(e.data for e in events if e.event == "task:assessment")
    assert assessment["score"] == 4.5 and assessment["passed"] is True
    assert [(c["criterion"], c["score"], c["reason"]) for c in assessment["criteria"]] == [
        ("All critical issues identified", 5.0, "the injection is found"),
        ("Feedback is actionable and specific", 4.0, "says how to fix it"),
    ]
    # Tokens and cost per attempt, and the totals.
    rows = {r["task_id"]: r for r in db_rows(stack, "SELECT * FROM attempts WHERE run_id = %s", run_id)}
    review = rows[ids["Analyze code changes"]]
    assert (review["tokens_in"], review["tokens_out"]) == (2100, 150)
    assert review["cost_usd"] == pytest.approx((2100 * 3 + 150 * 15) / 1e6)
    assert (review["judge_tokens_in"], review["judge_tokens_out"]) == (310, 35)
    assert review["outcomes"] == [{"type": "file", "path": "review.md", "characters": 24}]
    with psycopg.connect(stack.env["DATABASE_URL"], row_factory=dict_row) as conn:
        usage = mission_usage(conn, created["id"])
    expected = (2100 * 3 + 150 * 15 + 900 * 1 + 70 * 5 + 310 * 0.5 + 35 * 1.5) / 1e6
    assert usage.total.cost_usd == pytest.approx(expected)
    assert usage.total.tokens_in == 2100 + 900 + 310 and usage.run(run_id) == usage.total
    # /metrics: the same tokens and cost by provider and model, counted by the worker as it recorded them.
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def usage_scraped() -> bool:
        text = requests.get(f"{stack.url}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return ("missions_cost_usd_total", (("model", "lead"), ("provider", "anthropic"))) in samples

    wait_for(usage_scraped, 10, "the usage counters to reach /metrics", stack)  # flushed once a second
    reviewer_labels = (("model", "reviewer"), ("provider", "openai"))
    assert samples[("missions_tokens_total", (("direction", "input"), *reviewer_labels))] == 2100
    assert samples[("missions_tokens_total", (("direction", "output"), *reviewer_labels))] == 150
    assert samples[("missions_cost_usd_total", reviewer_labels)] == pytest.approx((2100 * 3 + 150 * 15) / 1e6)
    judge_labels = (("model", "judge"), ("provider", "openai"))
    assert samples[("missions_tokens_total", (("direction", "input"), *judge_labels))] == 310
    assert samples[("missions_cost_usd_total", (("model", "lead"), ("provider", "anthropic")))] == pytest.approx(
        (900 * 1 + 70 * 5) / 1e6
    )


def test_a_low_score_is_retried_with_the_judges_reasons_and_the_last_attempt_uses_the_escalated_model(
    stack: Stack, llm: FakeLLM
) -> None:
    llm.script(
        "drafter",
        fail(429, "slow down", retry_after=0),
        say("draft about edge cases"),
        say("second draft about edge cases"),
    )
    llm.script("drafter-pro", say("final edge case list: empty, huge, unicode"))
    llm.script(
        "judge",
        *[
            call("submit_scores", {"scores": [{"index": 1, "score": s, "reason": r}]})
            for s, r in ((2, "misses empty input"), (2, "still misses empty input"), (5, "complete"))
        ],
    )
    document = {
        "name": "escalate",
        "prompt": "List edge cases.",
        "qualityThreshold": 4.0,
        "tasks": [
            {
                "title": "Draft",
                "assignTo": "writer",
                "description": "List the edge cases of parse().",
                "maxRetries": 1,
                "retryPolicy": {"escalateModel": "openai/drafter-pro"},
                "expectations": [
                    {"criterion": "Covers the edge cases", "weight": 2},
                    {"type": "contains", "value": "edge"},
                ],
            }
        ],
        "team": team({"name": "writer", "role": "Writes", "model": "openai/drafter", "profile": "fake-openai"}),
        "assessor": {"model": "openai/judge", "profile": "fake-openai"},
    }
    created = stack.create(document)
    stack.execute(created["id"])
    final = stack.wait_status(created["id"], "completed", "failed", timeout=60)
    task = stack.tasks(final)["Draft"]
    assert final["status"] == "completed", stack.log_tail()
    assert (task["attempt"], task["model"], task["score"]) == (3, "openai/drafter-pro", 5.0)
    drafter = llm.seen("drafter")
    assert len(drafter) == 3  # the 429 was retried inside attempt 1 and did not use up a retry
    assert "Attempt 1 failed: assessment score 3 is below the quality threshold 4" in drafter[2].text
    assert "Assessor on Covers the edge cases (score 2): misses empty input" in drafter[2].text
    pro = llm.seen("drafter-pro")
    assert len(pro) == 1 and "still misses empty input" in pro[0].text
    rows = db_rows(stack, "SELECT attempt, model, score FROM attempts WHERE task_id = %s ORDER BY attempt", task["id"])
    assert [(r["attempt"], r["model"], r["score"]) for r in rows] == [
        (1, "openai/drafter", 3.0),
        (2, "openai/drafter", 3.0),
        (3, "openai/drafter-pro", 5.0),
    ]


def test_going_over_the_budget_stops_the_run_like_an_abort_and_cuts_the_streaming_call(
    stack: Stack, llm: FakeLLM
) -> None:
    # "big" answers only once "slow" is streaming, so the stop finds a call in flight to cut.
    llm.script("big", say("a long and expensive answer", usage=(400, 200), after="slow", delay=0.5))
    llm.script("slow", say(" ".join(["token"] * 200), chunk_delay=0.25))
    document = {
        "name": "budgeted",
        "prompt": "Spend carefully.",
        "budget": {"maxTokens": 500},
        "tasks": [
            {"title": "Big", "assignTo": "spender", "description": "Answer at length."},
            {"title": "Slow", "assignTo": "streamer", "description": "Stream slowly."},
            {"title": "After big", "assignTo": "spender", "dependsOn": ["Big"], "description": "Go on."},
        ],
        "team": team(
            {"name": "spender", "role": "Spends", "model": "openai/big", "profile": "fake-openai"},
            {"name": "streamer", "role": "Streams", "model": "anthropic/slow", "profile": "fake-anthropic"},
        ),
    }
    created = stack.create(document)
    events = stack.execute_streaming(created["id"])
    stopped = time.monotonic()
    done = events[-1]
    assert done.event == "mission:done" and done.data["status"] == "failed" and done.data["reason"] == "budget_exceeded"
    assert done.data["summary"] == {"completed": 1, "failed": 0, "skipped": 0, "cancelled": 2}
    final = stack.mission(created["id"])
    assert final["status"] == "failed" and final["failureReason"] == "budget_exceeded"
    assert {t["title"]: t["status"] for t in final["tasks"]} == {
        "Big": "completed",
        "Slow": "cancelled",
        "After big": "cancelled",
    }
    # The worker stopped reading the slow stream: the fake sees the client hang up.
    wait_for(lambda: llm.disconnects >= 1, 3, "the streaming call to be cut", stack)
    assert time.monotonic() - stopped < 2.0
    assert llm.seen("big") and len(llm.seen("big")) == 1  # "After big" never ran
