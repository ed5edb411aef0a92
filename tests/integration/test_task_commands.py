"""Operator control over the HTTP API against real Postgres and Redis: commands on one task of a
run (retry, cancel), continuing a failed run, reviews at checkpoints, timeouts for people and
delays (their timers fired by the tick's ``fire_timers``); attempts are run in the test's thread by
a real executor."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from tests.fixtures.examples import DEPLOY_PIPELINE
from tests.support import shell
from tests.support.sse import iter_sse
from workers.coordination.tick import fire_timers
from workers.execution.executor import Executor
from workers.execution.providers import Providers
from workers.messaging.dispatch import cancel_key
from workers.wiring import Services


def _doc(tasks: list[dict[str, Any]], agents: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    for task in tasks:
        task.setdefault("description", f"Do {task['title']}")
    return {
        "name": "ops",
        "tasks": tasks,
        "team": {
            "name": "crew",
            "volatile": True,
            "agents": [{"name": n, "role": "r", "model": "scripted/x", "script": s} for n, s in agents.items()],
        },
    }


BRANCHES = _doc(
    [
        {"title": "Broken", "assignTo": "flaky", "maxRetries": 0},
        {"title": "After broken", "assignTo": "good", "dependsOn": ["Broken"]},
        {"title": "Independent", "assignTo": "good"},
    ],
    {"flaky": [{"fail": "first run breaks"}, {"output": "fixed"}], "good": [{"output": "ok"}]},
)


@pytest.fixture
def executor(services: Services) -> Executor:
    return shell.executor(services, "test-worker", Providers(services.settings, environ={}))


class Ops:
    """One mission of the test's project, driven over the API, its attempts run by ``executor``."""

    def __init__(self, client: FlaskClient, auth: dict[str, str], executor: Executor, doc: dict[str, Any]) -> None:
        self.client, self.auth, self.executor = client, auth, executor
        created = client.post("/v1/missions", json=copy.deepcopy(doc), headers=auth)
        assert created.status_code == 201, created.get_json()
        self.mission = created.get_json()
        self.id = self.mission["id"]
        self.ids = {t["title"]: t["id"] for t in self.mission["tasks"]}
        self.run_id = ""

    def execute(self) -> None:
        answer = self.client.post(f"/v1/missions/{self.id}/execute", headers=self.auth)
        assert answer.status_code == 202, answer.get_json()
        self.run_id = answer.get_json()["id"]

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.client.post(f"/v1/missions/{self.id}{path}", headers=self.auth, **kwargs)

    def task(self, title: str) -> dict[str, Any]:
        detail = self.client.get(f"/v1/missions/{self.id}/runs/{self.run_id}", headers=self.auth).get_json()
        return next(t for t in detail["tasks"] if t["title"] == title)

    def status(self) -> str:
        return str(self.client.get(f"/v1/missions/{self.id}", headers=self.auth).get_json()["status"])

    def run(self, title: str) -> str:
        """Run the task's current attempt here."""
        task = self.task(title)
        return self.executor.run_attempt(self.run_id, self.ids[title], task["attempt"])

    def events(self, **headers: str) -> Any:
        return self.client.get(f"/v1/missions/{self.id}/events", headers={**self.auth, **headers})


@pytest.fixture
def failed(client: FlaskClient, auth: dict[str, str], executor: Executor) -> Ops:
    ops = Ops(client, auth, executor, BRANCHES)
    ops.execute()
    assert ops.run("Broken") == "failed"
    assert ops.run("Independent") == "finished"
    assert ops.status() == "failed"
    return ops


def _attempts(db: psycopg.Connection, run_id: str) -> list[tuple[str, int, str]]:
    rows = db.execute(
        "SELECT t.document->>'title' AS title, a.attempt, a.status FROM attempts a JOIN tasks t ON t.id = a.task_id"
        " WHERE a.run_id = %s ORDER BY 1, 2",
        (run_id,),
    ).fetchall()
    return [(r["title"], r["attempt"], r["status"]) for r in rows]


def test_retrying_the_failed_task_continues_the_failed_run_without_running_completed_tasks_again(
    failed: Ops, db: psycopg.Connection
) -> None:
    answer = failed.post(f"/tasks/{failed.ids['Broken']}/retry")
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["status"] == "queued" and answer.get_json()["attempt"] == 2
    assert failed.status() == "active"
    assert failed.task("After broken")["status"] == "pending"
    assert failed.run("Broken") == "finished"
    assert failed.run("After broken") == "finished"
    assert failed.status() == "completed"
    assert _attempts(db, failed.run_id) == [
        ("After broken", 1, "completed"),
        ("Broken", 1, "failed"),
        ("Broken", 2, "completed"),
        ("Independent", 1, "completed"),  # not paid again
    ]
    run = failed.client.get(f"/v1/missions/{failed.id}/runs/{failed.run_id}", headers=failed.auth).get_json()
    assert run["status"] == "completed" and run["finishedAt"] is not None
    runs = failed.client.get(f"/v1/missions/{failed.id}/runs", headers=failed.auth).get_json()
    assert len(runs) == 1  # the same run went on


def test_resume_with_retry_failed_continues_a_failed_mission(failed: Ops, db: psycopg.Connection) -> None:
    answer = failed.post("/resume", json={"retryFailed": True})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["status"] == "active"
    run = failed.client.get(f"/v1/missions/{failed.id}/runs/{failed.run_id}", headers=failed.auth).get_json()
    assert run["status"] == "active" and run["finishedAt"] is None and run.get("failureReason") is None
    assert failed.run("Broken") == "finished"
    assert failed.run("After broken") == "finished"
    assert failed.status() == "completed"
    assert ("Independent", 2, "queued") not in _attempts(db, failed.run_id)


def test_the_stream_of_a_continued_run_replays_to_its_last_mission_done(failed: Ops) -> None:
    first = failed.events()
    ended = list(iter_sse(first.get_data(as_text=True).splitlines()))
    assert ended[-1].event == "mission:done"
    last_id = str(ended[-1].id)
    assert failed.events(**{"Last-Event-ID": last_id}).status_code == 204  # nothing more: it ended
    failed.post("/resume", json={"retryFailed": True})
    failed.run("Broken")
    failed.run("After broken")
    replay = list(iter_sse(failed.events().get_data(as_text=True).splitlines()))
    done = [e.data for e in replay if e.event == "mission:done"]
    assert [d["status"] for d in done if isinstance(d, dict)] == ["failed", "completed"]
    assert replay[-1].event == "mission:done"
    after_first = failed.events(**{"Last-Event-ID": last_id})
    assert after_first.status_code == 200
    rest = list(iter_sse(after_first.get_data(as_text=True).splitlines()))
    assert rest[0].event == "mission:status" and [e.event for e in rest].count("mission:done") == 1


def test_a_failed_mission_is_not_continued_without_retry_failed(failed: Ops) -> None:
    answer = failed.post("/resume", json={"retryFailed": False})
    assert answer.status_code == 409
    assert "only with retryFailed=true" in answer.get_json()["error"]


def test_an_aborted_run_is_not_continued(client: FlaskClient, auth: dict[str, str], executor: Executor) -> None:
    ops = Ops(client, auth, executor, BRANCHES)
    ops.execute()
    assert ops.post("/abort").status_code == 200
    resumed = ops.post("/resume", json={"retryFailed": True})
    assert resumed.status_code == 409 and "cancelled" in resumed.get_json()["error"]
    retried = ops.post(f"/tasks/{ops.ids['Broken']}/retry")
    assert retried.status_code == 409 and retried.get_json()["code"] == "conflict"


def test_cancelling_a_queued_task_cancels_its_attempt_and_skips_its_dependents(
    client: FlaskClient, auth: dict[str, str], executor: Executor, services: Services, db: psycopg.Connection
) -> None:
    ops = Ops(client, auth, executor, BRANCHES)
    ops.execute()
    answer = ops.post(f"/tasks/{ops.ids['Broken']}/cancel")
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["status"] == "cancelled" and body["error"] == "cancelled by an operator"
    assert services.redis.get(cancel_key(ops.run_id, ops.ids["Broken"], 1)) == b"cancelled"
    assert ops.task("After broken")["status"] == "skipped"
    assert ops.run("Broken").startswith("not claimed")  # the queued message finds the attempt cancelled
    assert ops.status() == "active"
    assert ops.run("Independent") == "finished"
    mission = client.get(f"/v1/missions/{ops.id}", headers=auth).get_json()
    assert mission["status"] == "failed" and mission["failureReason"] == "task_cancelled"
    again = ops.post(f"/tasks/{ops.ids['Broken']}/cancel")
    assert again.status_code == 409 and "the run is failed" in again.get_json()["error"]
    assert ("Broken", 1, "cancelled") in _attempts(db, ops.run_id)


def test_retrying_a_task_that_did_not_fail_is_a_conflict_naming_its_state(
    client: FlaskClient, auth: dict[str, str], executor: Executor
) -> None:
    ops = Ops(client, auth, executor, BRANCHES)
    ops.execute()
    answer = ops.post(f"/tasks/{ops.ids['Independent']}/retry")
    assert answer.status_code == 409
    assert "is queued; only a failed, cancelled or skipped task can be retried" in answer.get_json()["error"]


def test_a_task_command_before_any_run_is_a_conflict(
    client: FlaskClient, auth: dict[str, str], executor: Executor
) -> None:
    ops = Ops(client, auth, executor, BRANCHES)
    answer = ops.post(f"/tasks/{ops.ids['Broken']}/cancel")
    assert answer.status_code == 409 and "has not run yet" in answer.get_json()["error"]


@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_another_projects_mission_or_an_unknown_task_is_not_found(
    failed: Ops, client: FlaskClient, other_key: str, action: str
) -> None:
    other = {"Authorization": f"Bearer {other_key}"}
    answer = client.post(f"/v1/missions/{failed.id}/tasks/{failed.ids['Broken']}/{action}", headers=other)
    assert answer.status_code == 404 and answer.get_json()["code"] == "not_found"
    unknown = failed.post(f"/tasks/task_nope/{action}")
    assert unknown.status_code == 404 and "task_nope" in unknown.get_json()["error"]
    assert failed.status() == "failed"  # nothing changed


def test_the_public_deploy_pipeline_without_a_provider_key_ends_failed_and_its_stream_closes(
    client: FlaskClient, auth: dict[str, str], executor: Executor
) -> None:
    ops = Ops(client, auth, executor, DEPLOY_PIPELINE)
    ops.execute()
    # A missing key is a failure no retry can fix: the task fails on its first attempt.
    assert ops.task("Run tests")["attempt"] == 1
    assert ops.run("Run tests") == "failed"
    assert ops.task("Run tests")["status"] == "failed"
    assert ops.task("Deploy to staging")["status"] == "skipped"
    mission = client.get(f"/v1/missions/{ops.id}", headers=auth).get_json()
    assert mission["status"] == "failed" and mission["failureReason"] == "task_failed"
    stream = list(iter_sse(ops.events().get_data(as_text=True).splitlines()))  # it ends (no keep-alive forever)
    assert stream[-1].event == "mission:done"
    assert "ANTHROPIC_API_KEY" in ops.task("Run tests")["error"] and "not retried" in ops.task("Run tests")["error"]


# --------------------------------------------------------------------------- reviews, timeouts, delays

REVIEWED = _doc(
    [
        {"title": "Draft", "assignTo": "writer"},
        {"title": "Publish", "assignTo": "writer", "dependsOn": ["Draft"]},
    ],
    {"writer": [{"output": "first draft"}, {"output": "second draft"}]},
)
REVIEWED["checkpoints"] = [{"name": "edit", "afterTasks": ["Draft"], "blocksTasks": ["Publish"], "message": "Edit?"}]


@pytest.fixture
def at_checkpoint(client: FlaskClient, auth: dict[str, str], executor: Executor) -> Ops:
    ops = Ops(client, auth, executor, REVIEWED)
    ops.execute()
    assert ops.run("Draft") == "finished"
    assert ops.status() == "paused"
    return ops


def _run(ops: Ops) -> dict[str, Any]:
    return dict(ops.client.get(f"/v1/missions/{ops.id}/runs/{ops.run_id}", headers=ops.auth).get_json())


def test_request_changes_reruns_the_task_with_the_feedback_in_its_prompt_and_records_who_decided(
    at_checkpoint: Ops, db: psycopg.Connection, api_key: str
) -> None:
    ops = at_checkpoint
    answer = ops.post(
        "/review", json={"decision": "request_changes", "feedback": "Cite your sources.", "redo": ["Draft"]}
    )
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["status"] == "active"
    prompt = db.execute(
        "SELECT prompt FROM attempts WHERE run_id = %s AND task_id = %s AND attempt = 2", (ops.run_id, ops.ids["Draft"])
    ).fetchone()["prompt"]
    assert "# Your previous output\nfirst draft" in prompt
    assert "asked for changes: Cite your sources." in prompt
    (recorded,) = _run(ops)["reviews"]
    key_id = db.execute(
        "SELECT id, prefix FROM api_keys WHERE prefix = %s", (api_key[: len(recorded["reviewer"]["name"])],)
    ).fetchone()
    assert recorded["reviewer"] == {"id": key_id["id"], "name": key_id["prefix"]}
    assert (recorded["decision"], recorded["feedback"], recorded["redo"]) == (
        "request_changes",
        "Cite your sources.",
        ["Draft"],
    )
    assert ops.run("Draft") == "finished"
    assert ops.status() == "paused"  # the checkpoint is reached again
    assert ops.post("/review", json={"decision": "approve"}).status_code == 200
    assert ops.run("Publish") == "finished"
    assert ops.status() == "completed"
    assert [r["decision"] for r in _run(ops)["reviews"]] == ["request_changes", "approve"]
    stream = list(iter_sse(ops.events().get_data(as_text=True).splitlines()))
    assert [e.data["decision"] for e in stream if e.event == "review:decided" and isinstance(e.data, dict)] == [
        "request_changes",
        "approve",
    ]


def test_reject_fails_the_mission_with_reason_rejected(at_checkpoint: Ops) -> None:
    answer = at_checkpoint.post("/review", json={"decision": "reject", "feedback": "Off topic."})
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["status"] == "failed" and body["failureReason"] == "rejected"
    assert _run(at_checkpoint)["reviews"][0]["feedback"] == "Off topic."


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"decision": "request_changes"}, "feedback"),
        ({"decision": "request_changes", "feedback": "   "}, "feedback"),
        ({"decision": "approve", "redo": ["Draft"]}, "redo"),
        ({"decision": "maybe"}, "decision"),
        ({"decision": "request_changes", "feedback": "x", "redo": ["Nope"]}, "redo[0]"),
    ],
)
def test_a_malformed_review_is_a_400_naming_the_field_and_changes_nothing(
    at_checkpoint: Ops, body: dict[str, Any], field: str
) -> None:
    answer = at_checkpoint.post("/review", json=body)
    assert answer.status_code == 400, answer.get_json()
    assert field in answer.get_json()["details"]["fields"]
    assert at_checkpoint.status() == "paused" and _run(at_checkpoint)["reviews"] == []


def test_a_review_the_run_cannot_take_is_a_conflict(at_checkpoint: Ops, client: FlaskClient, other_key: str) -> None:
    redo_blocked = at_checkpoint.post(
        "/review", json={"decision": "request_changes", "feedback": "x", "redo": ["Publish"]}
    )
    assert (
        redo_blocked.status_code == 409
        and "not an afterTask of a waiting checkpoint" in redo_blocked.get_json()["error"]
    )
    other = {"Authorization": f"Bearer {other_key}"}
    assert (
        client.post(f"/v1/missions/{at_checkpoint.id}/review", json={"decision": "approve"}, headers=other).status_code
        == 404
    )
    assert at_checkpoint.post("/review", json={"decision": "approve"}).status_code == 200
    again = at_checkpoint.post("/review", json={"decision": "approve"})
    assert again.status_code == 409 and again.get_json()["code"] == "conflict"


@pytest.mark.parametrize(("on_timeout", "status"), [("approve", "active"), ("reject", "failed"), ("fail", "failed")])
def test_a_checkpoint_timeout_is_a_timer_row_fired_by_the_tick(
    client: FlaskClient, auth: dict[str, str], executor: Executor, db: psycopg.Connection, on_timeout: str, status: str
) -> None:
    doc = copy.deepcopy(REVIEWED)
    doc["checkpoints"][0].update(timeout=60, onTimeout=on_timeout)
    ops = Ops(client, auth, executor, doc)
    ops.execute()
    ops.run("Draft")
    timer = db.execute("SELECT kind, key, due_at FROM timers WHERE run_id = %s", (ops.run_id,)).fetchone()
    assert (timer["kind"], timer["key"]) == ("checkpoint", "0")
    assert fire_timers(executor.coordinator, timer["due_at"] - timedelta(seconds=1)) == 0
    assert fire_timers(executor.coordinator, timer["due_at"] + timedelta(seconds=1)) == 1
    run = _run(ops)
    assert run["status"] == status and run["reviews"][0]["timedOut"] is True
    assert run["reviews"][0]["decision"] == on_timeout and run["reviews"][0]["reviewer"] is None
    publish = next(t for t in run["tasks"] if t["title"] == "Publish")
    assert publish["status"] == {"approve": "queued", "reject": "cancelled", "fail": "skipped"}[on_timeout]
    if on_timeout != "approve":
        assert run["failureReason"] == {"reject": "rejected", "fail": "task_failed"}[on_timeout]


def test_a_delay_holds_its_blocked_task_until_its_timer_fires(
    client: FlaskClient, auth: dict[str, str], executor: Executor, db: psycopg.Connection
) -> None:
    doc = copy.deepcopy(REVIEWED)
    del doc["checkpoints"]
    doc["delays"] = [{"name": "cool-off", "afterTasks": ["Draft"], "blocksTasks": ["Publish"], "duration": "PT10M"}]
    ops = Ops(client, auth, executor, doc)
    assert ops.mission["status"] == "draft"
    shown = client.get(f"/v1/missions/{ops.id}", headers=auth).get_json()
    assert shown["delays"] == doc["delays"]
    ops.execute()
    ops.run("Draft")
    delays = _run(ops)["delays"]
    assert [(d["name"], d["status"], d["duration"]) for d in delays] == [("cool-off", "waiting", "PT10M")]
    assert ops.task("Publish")["status"] == "pending"
    timer = db.execute("SELECT kind, key, due_at FROM timers WHERE run_id = %s", (ops.run_id,)).fetchone()
    assert (timer["kind"], timer["key"]) == ("delay", "0")
    assert fire_timers(executor.coordinator, timer["due_at"] + timedelta(seconds=1)) == 1
    assert ops.task("Publish")["status"] == "queued"
    assert _run(ops)["delays"][0]["status"] == "elapsed"


def test_reassessing_scores_the_last_output_again_without_running_the_agent(
    client: FlaskClient, auth: dict[str, str], executor: Executor, db: psycopg.Connection
) -> None:
    doc = _doc(
        [
            {"title": "Graded", "assignTo": "w", "maxRetries": 0, "expectations": [{"criterion": "is right"}]},
            {"title": "Next", "assignTo": "w", "dependsOn": ["Graded"]},
        ],
        {"w": [{"output": "the answer"}]},
    )
    doc["assessor"] = {
        "model": "scripted/judge",
        "script": [{"score": 1, "reason": "judge misconfigured"}, {"score": 5}],
    }
    ops = Ops(client, auth, executor, doc)
    ops.execute()
    ops.run("Graded")
    if ops.task("Graded")["status"] == "assessing":
        executor.assess(ops.run_id, ops.ids["Graded"], 1)
    assert ops.task("Graded")["status"] == "failed" and ops.status() == "failed"
    conflict = ops.post(f"/tasks/{ops.ids['Next']}/reassess")
    assert (
        conflict.status_code == 409
        and "only a failed task whose last attempt failed its assessment" in (conflict.get_json()["error"])
    )
    answer = ops.post(f"/tasks/{ops.ids['Graded']}/reassess")
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["status"] == "assessing" and ops.status() == "active"
    executor.assess(ops.run_id, ops.ids["Graded"], 1)
    graded = ops.task("Graded")
    assert (graded["status"], graded["score"], graded["attempt"]) == ("completed", 5.0, 1)
    assert ops.task("Next")["status"] == "queued"
    assert _attempts(db, ops.run_id) == [("Graded", 1, "completed"), ("Next", 1, "queued")]  # one agent call
