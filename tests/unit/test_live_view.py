"""The CLI's view of a run: it uses the events' own times (a replay shows when tasks really ran),
a pause ends with the command that goes on, and what a person reads about errors, reviews and
delays."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from api.cli.client import Event
from api.cli.client_commands import resume_hint
from api.cli.live import PlainDisplay, RunView


def status(task_status: str, at: str) -> Event:
    data = {"missionId": "msn_1", "runId": "run_1", "taskId": "task_1", "status": task_status, "timestamp": at}
    return Event(None, "task:status", {**data, "agent": "writer", "attempt": 1})


def test_a_replayed_task_shows_its_real_duration_and_time_not_the_time_it_was_read() -> None:
    view = RunView.of({"id": "msn_1", "name": "m", "status": "active", "tasks": [{"id": "task_1", "title": "Draft"}]})
    lines: list[str] = []
    display = PlainDisplay(echo=lines.append)
    display.start(view)
    display.event(status("running", "2026-01-02T03:04:05Z"))
    display.event(status("completed", "2026-01-02T03:04:07.500000Z"))
    local = datetime.fromisoformat("2026-01-02T03:04:07.500000+00:00").astimezone().strftime("%H:%M:%S")
    assert lines[-1] == f'{local} task "Draft" completed (writer, attempt 1, 2.5s)'
    assert view.summary_lines() == ["  ✓ Draft  completed (writer, attempt 1, 2.5s)"]


def test_an_event_without_a_timestamp_falls_back_to_the_clock() -> None:
    view = RunView.of({"id": "msn_1", "name": "m", "status": "active", "tasks": [{"id": "task_1", "title": "Draft"}]})
    plain = {"missionId": "msn_1", "runId": "run_1", "taskId": "task_1", "agent": "writer", "attempt": 1}
    view.apply(Event(None, "task:status", {**plain, "status": "running"}), now=100.0)
    view.apply(Event(None, "task:status", {**plain, "status": "completed"}), now=101.25)
    assert view.tasks["task_1"].elapsed(200.0) == 1.25


def test_each_pause_reason_names_the_command_that_goes_on() -> None:
    assert "missions resume msn_1 --follow" in resume_hint("msn_1", "checkpoint")
    gate = resume_hint("msn_1", "quality_gate", " --url http://h:1")
    assert "missions resume msn_1 --url http://h:1 --retry-failed --follow" in gate
    assert "override the gate: missions resume msn_1 --url http://h:1 --follow" in gate
    assert "missions resume msn_1 --retry-failed --follow" in resume_hint("msn_1", "approval")


def view() -> RunView:
    return RunView.of({"id": "msn_1", "name": "m", "status": "active", "tasks": [{"id": "t1", "title": "Call"}]})


def event(kind: str, **data: Any) -> Event:
    return Event(1, kind, {"missionId": "msn_1", "runId": "run_1", **data})


def test_a_task_error_is_told_once_with_its_code_on_the_task_line() -> None:
    run = view()
    error = event("error", taskId="t1", title="Call", attempt=1, code="missing_key", message="no key", willRetry=False)
    assert run.apply(error) == []
    status = event("task:status", taskId="t1", title="Call", status="failed", attempt=1, error="no key")
    (line,) = run.apply(status)
    assert line.startswith('task "Call" failed') and line.endswith(": [missing_key] no key")


def test_an_error_that_stopped_the_run_is_its_own_line() -> None:
    message = "the run reached its deadline and was stopped"
    line = view().apply(event("error", code="deadline_exceeded", message=message))
    assert line == [f"error [deadline_exceeded]: {message}"]


def paused_view() -> RunView:
    return RunView.of({"id": "msn_1", "name": "m", "status": "paused", "tasks": []})


def test_a_review_says_what_was_decided_by_whom_and_why() -> None:
    data = {"decision": "request_changes", "reviewer": {"id": "key_1", "name": "sk_live_ab"}, "redo": ["Draft"]}
    lines = paused_view().apply(Event(1, "review:decided", {**data, "feedback": "Cite sources.", "timedOut": False}))
    assert lines == ['review: request_changes by sk_live_ab (redo "Draft"): Cite sources.']
    timed_out = {"decision": "fail", "reviewer": None, "timedOut": True, "feedback": "no decision within 60 seconds"}
    assert paused_view().apply(Event(2, "review:decided", timed_out)) == [
        "review: fail by a timeout: no decision within 60 seconds"
    ]


def test_a_delay_says_what_waits_until_when_and_when_it_is_over() -> None:
    started = {"delay": 0, "name": "soak", "blocksTasks": ["Deploy"], "until": "2026-04-01T12:10:00Z"}
    assert paused_view().apply(Event(1, "delay:started", started)) == [
        'delay soak: "Deploy" wait until 2026-04-01T12:10:00Z'
    ]
    assert paused_view().apply(Event(2, "delay:ended", {"delay": 1, "name": None})) == ["delay #2 is over"]
