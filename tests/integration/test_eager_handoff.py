"""Eager hand-off of dependents: the worker thread whose step starts a dependent runs it itself,
without a broker round trip, while its window lasts; the attempt row is committed first, so a
thread that dies before claiming it leaves a queued attempt the tick sends again, and a duplicate
delivery of a handed-off attempt finds it claimed."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from config import Settings
from tests.support import shell
from workers.coordination.tick import resend_lost_messages
from workers.execution.executor import Executor
from workers.messaging.dispatch import TASK_QUEUE
from workers.store import missions
from workers.support import metrics
from workers.support.clock import utcnow
from workers.wiring import Services

LIMITS = missions.Limits()


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, redis_url=redis_url, data_dir=tmp_path / "data")


@pytest.fixture
def executor(services: Services) -> Executor:
    return shell.executor(services, "test-worker", eager=True)


@pytest.fixture
def agent_runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(task title, thread name) of every agent run, in order."""
    calls: list[tuple[str, str]] = []
    shell.note_agent_runs(monkeypatch, lambda call: calls.append((call.title, threading.current_thread().name)))
    return calls


def _start(services: Services, tasks: list[dict[str, Any]], name: str = "m") -> tuple[str, dict[str, str]]:
    return shell.start_run(services, tasks, name=name, send=True)  # (the first attempts' messages sent)


def _queued(services: Services) -> list[str]:
    """The task ids of the attempt messages in the broker queue, in order."""
    found = []
    for raw in services.redis.lrange(TASK_QUEUE, 0, -1):
        message: dict[str, Any] = json.loads(raw)
        found.append(message["headers"]["argsrepr"].split("'")[3])
    return found


def _take_message(services: Services) -> tuple[str, str, int]:
    """Pop the oldest attempt message off the queue, as a worker would: its (run, task, attempt)."""
    raw = services.redis.rpop(TASK_QUEUE)
    assert raw is not None, "no message in the queue"
    args = json.loads(raw)["headers"]["argsrepr"]
    run_id, task_id, attempt = eval(args)  # noqa: S307 - the repr of a tuple of str, str, int we sent
    return run_id, task_id, attempt


def _attempts(db: psycopg.Connection, run_id: str) -> dict[str, tuple[str, str | None]]:
    rows = db.execute(
        "SELECT t.title, a.status, a.worker FROM attempts a JOIN runs r ON r.id = a.run_id"
        " JOIN tasks t ON t.id = a.task_id AND t.mission_id = r.mission_id WHERE a.run_id = %s",
        (run_id,),
    )
    return {r["title"]: (r["status"], r["worker"]) for r in rows}


def _run_status(db: psycopg.Connection, run_id: str) -> str:
    return str(db.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()["status"])


def test_a_chain_runs_in_the_thread_of_its_first_message_without_sending_the_others(
    services: Services, executor: Executor, agent_runs: list[tuple[str, str]], db: psycopg.Connection
) -> None:
    run_id, ids = _start(
        services,
        [{"title": "a"}, {"title": "b", "dependsOn": ["a"]}, {"title": "c", "dependsOn": ["b"]}],
    )
    assert _queued(services) == [ids["a"]]
    message = _take_message(services)
    handed_before = metrics._recorder._attempts.get("handed_off", 0)

    what = executor.run_attempt(*message)

    assert what == "finished; then 2 attempt(s) handed off to this thread"
    assert [title for title, _ in agent_runs] == ["a", "b", "c"]
    assert len({thread for _, thread in agent_runs}) == 1
    assert _queued(services) == []  # b's and c's messages were never sent
    assert _run_status(db, run_id) == "completed"
    assert metrics._recorder._attempts.get("handed_off", 0) - handed_before == 2


def test_a_fan_out_hands_one_dependent_to_the_thread_and_sends_the_others(
    services: Services, executor: Executor, agent_runs: list[tuple[str, str]], db: psycopg.Connection
) -> None:
    run_id, ids = _start(
        services,
        [{"title": "a"}, *({"title": t, "dependsOn": ["a"]} for t in ("b", "c", "d"))],
    )
    executor.run_attempt(*_take_message(services))

    ran = [title for title, _ in agent_runs]
    assert ran[0] == "a" and len(ran) == 2  # a, then one of b, c, d in the same call
    sent = _queued(services)
    assert sorted([ran[1], *(title for title, task_id in ids.items() if task_id in sent)]) == ["b", "c", "d"]
    while services.redis.llen(TASK_QUEUE):  # the others, delivered to (this) worker as messages
        executor.run_attempt(*_take_message(services))
    assert _run_status(db, run_id) == "completed"


def test_with_the_window_off_every_dependent_goes_through_the_broker(
    services: Services, agent_runs: list[tuple[str, str]], db: psycopg.Connection
) -> None:
    off = Services(services.settings.replace(eager_handoff_seconds=0.0))
    try:
        executor = shell.executor(off, "test-worker", eager=True)
        _run_id, ids = _start(services, [{"title": "a"}, {"title": "b", "dependsOn": ["a"]}])
        assert executor.run_attempt(*_take_message(services)) == "finished"
        assert [title for title, _ in agent_runs] == ["a"]
        assert _queued(services) == [ids["b"]]
    finally:
        off.close()


def test_a_worker_that_is_shutting_down_hands_nothing_off(
    services: Services, executor: Executor, agent_runs: list[tuple[str, str]]
) -> None:
    _run_id, ids = _start(services, [{"title": "a"}, {"title": "b", "dependsOn": ["a"]}])
    executor.stop_handing_off()
    assert executor.run_attempt(*_take_message(services)) == "finished"
    assert _queued(services) == [ids["b"]]


def test_the_window_closes_after_its_seconds(
    services: Services, agent_runs: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    short = Services(services.settings.replace(eager_handoff_seconds=0.5))
    try:
        executor = shell.executor(short, "test-worker", eager=True)
        original = executor._run_attempt

        def slow(run_id: str, task_id: str, attempt: int) -> str:
            what = original(run_id, task_id, attempt)
            threading.Event().wait(0.6)  # each attempt takes longer than the window
            return what

        monkeypatch.setattr(executor, "_run_attempt", slow)
        _run_id, ids = _start(
            services, [{"title": "a"}, {"title": "b", "dependsOn": ["a"]}, {"title": "c", "dependsOn": ["b"]}]
        )
        # a's step takes b (the window is open when a's result is recorded); b's, recorded once the
        # window has passed, sends c through the broker.
        assert executor.run_attempt(*_take_message(services)).endswith("then 1 attempt(s) handed off to this thread")
        assert [title for title, _ in agent_runs] == ["a", "b"]
        assert _queued(services) == [ids["c"]]
    finally:
        short.close()


def test_a_dependent_of_an_assessed_task_is_handed_off_after_its_verdict(
    services: Services, executor: Executor, agent_runs: list[tuple[str, str]], db: psycopg.Connection
) -> None:
    run_id, _ids = _start(
        services,
        [
            {"title": "a", "expectations": [{"type": "contains", "value": "result"}]},
            {"title": "b", "dependsOn": ["a"]},
        ],
    )
    assert executor.run_attempt(*_take_message(services)) == "finished; then 1 attempt(s) handed off to this thread"
    assert [title for title, _ in agent_runs] == ["a", "b"]
    assert _queued(services) == []
    assert _run_status(db, run_id) == "completed"


def test_an_attempt_taken_by_a_thread_that_dies_before_claiming_it_is_sent_again_by_the_tick(
    services: Services, executor: Executor, agent_runs: list[tuple[str, str]], db: psycopg.Connection
) -> None:
    run_id, ids = _start(services, [{"title": "a"}, {"title": "b", "dependsOn": ["a"]}])

    class Died(BaseException):
        """The thread's death between the step's commit and the claim (a kill -9 sends nothing)."""

    def die(run_id: str, task_id: str, attempt: int) -> str:
        raise Died

    sent_again: list[tuple[str, str, int]] = []
    executor._send_each = lambda run_id, items: sent_again.extend((run_id, *i) for i in items)  # (killed: no send)
    original = executor._attempt
    calls = iter([original, die])

    def first_runs_then_the_thread_dies(run_id: str, task_id: str, attempt: int) -> str:
        return next(calls)(run_id, task_id, attempt)

    executor._attempt = first_runs_then_the_thread_dies  # type: ignore[method-assign]

    with pytest.raises(Died):
        executor.run_attempt(*_take_message(services))
    assert sent_again == [(run_id, ids["b"], 1)]  # what a live thread does; this one was "killed"
    assert _queued(services) == [] and _attempts(db, run_id)["b"] == ("queued", None)

    later = utcnow() + timedelta(seconds=services.settings.requeue_seconds + 1)
    assert resend_lost_messages(shell.coordinator(services), shell.dispatcher(services), services.settings, later) == 1
    assert _queued(services) == [ids["b"]]
    executor._attempt = original  # type: ignore[method-assign]
    executor.run_attempt(*_take_message(services))
    assert _run_status(db, run_id) == "completed"


def test_an_attempt_whose_handed_off_run_raises_is_sent_to_the_broker(
    services: Services, executor: Executor, agent_runs: list[tuple[str, str]], db: psycopg.Connection
) -> None:
    run_id, ids = _start(services, [{"title": "a"}, {"title": "b", "dependsOn": ["a"]}])
    original = executor._run_attempt
    calls = iter([original])

    def claim_fails(run_id: str, task_id: str, attempt: int) -> str:
        step = next(calls, None)
        if step is None:
            raise psycopg.OperationalError("the server closed the connection before the claim")
        return step(run_id, task_id, attempt)

    executor._run_attempt = claim_fails  # type: ignore[method-assign]
    with pytest.raises(psycopg.OperationalError):
        executor.run_attempt(*_take_message(services))
    assert _queued(services) == [ids["b"]]  # sent after all: another worker (or this one) runs it
    executor._run_attempt = original  # type: ignore[method-assign]
    executor.run_attempt(*_take_message(services))
    assert _run_status(db, run_id) == "completed"


def test_a_duplicate_delivery_of_a_handed_off_attempt_is_a_no_op(
    services: Services, executor: Executor, agent_runs: list[tuple[str, str]], db: psycopg.Connection
) -> None:
    run_id, ids = _start(services, [{"title": "a"}, {"title": "b", "dependsOn": ["a"]}])
    executor.run_attempt(*_take_message(services))
    assert executor.run_attempt(run_id, ids["b"], 1).startswith("not claimed")
    assert [title for title, _ in agent_runs] == ["a", "b"]


def test_a_worker_that_begins_a_warm_shutdown_stops_handing_off(
    services: Services, settings: Settings, db: psycopg.Connection
) -> None:
    """Through the worker's own app: its task body hands off until Celery's ``worker_shutting_down``."""
    from celery.signals import worker_shutting_down

    from workers.wiring import worker_app

    app, worker_services = worker_app(settings)
    run_task = app.tasks["missions.run_task"]
    try:
        before, ids = _start(services, [{"title": "a"}, {"title": "b", "dependsOn": ["a"]}])
        assert run_task(*_take_message(services)) == "finished; then 1 attempt(s) handed off to this thread"
        assert _run_status(db, before) == "completed"

        worker_shutting_down.send(sender="w@host", sig="SIGTERM", how="Warm", exitcode=0)
        _, ids = _start(services, [{"title": "a"}, {"title": "b", "dependsOn": ["a"]}], name="after")
        assert run_task(*_take_message(services)) == "finished"
        assert _queued(services) == [ids["b"]]  # left for the broker (another worker, or this one's next start)
    finally:
        worker_services.close()
