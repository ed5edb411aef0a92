"""What the CLI's live view says about operator control events (``api.cli.live.RunView``)."""

from __future__ import annotations

from api.cli.client import Event
from api.cli.live import RunView


def view() -> RunView:
    return RunView.of({"id": "msn_1", "name": "m", "status": "paused", "tasks": []})


def test_a_review_says_what_was_decided_by_whom_and_why() -> None:
    data = {"decision": "request_changes", "reviewer": {"id": "key_1", "name": "sk_live_ab"}, "redo": ["Draft"]}
    lines = view().apply(Event(1, "review:decided", {**data, "feedback": "Cite sources.", "timedOut": False}))
    assert lines == ['review: request_changes by sk_live_ab (redo "Draft"): Cite sources.']
    timed_out = {"decision": "fail", "reviewer": None, "timedOut": True, "feedback": "no decision within 60 seconds"}
    assert view().apply(Event(2, "review:decided", timed_out)) == [
        "review: fail by a timeout: no decision within 60 seconds"
    ]


def test_a_delay_says_what_waits_until_when_and_when_it_is_over() -> None:
    started = {"delay": 0, "name": "soak", "blocksTasks": ["Deploy"], "until": "2026-04-01T12:10:00Z"}
    assert view().apply(Event(1, "delay:started", started)) == ['delay soak: "Deploy" wait until 2026-04-01T12:10:00Z']
    assert view().apply(Event(2, "delay:ended", {"delay": 1, "name": None})) == ["delay #2 is over"]
