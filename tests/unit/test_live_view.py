"""The CLI's live view of a run: what a person reads about errors."""

from __future__ import annotations

from typing import Any

from api.cli.client import Event
from api.cli.live import RunView


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
