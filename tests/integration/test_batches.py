"""Attempts of one run started together travel in one message (``MISSIONS_BATCH_ATTEMPTS``); the
worker thread that receives it runs them one after the other while they are quick, and sends the
rest on, a message each, once one of them is slow (``MISSIONS_BATCH_RELEASE_SECONDS``). Each is
still claimed on its own, so a duplicate is a no-op and nothing is run twice."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from config import Settings
from tests.support import shell
from workers.execution.executor import Executor
from workers.messaging.dispatch import RUN_TASK, RUN_TASKS, TASK_QUEUE, Dispatcher
from workers.support import metrics
from workers.wiring import Services

FIVE = [{"title": t} for t in ("a", "b", "c", "d", "e")]


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, redis_url=redis_url, data_dir=tmp_path / "data")


@pytest.fixture
def agent_runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(task title, thread name) of every agent run, in order."""
    calls: list[tuple[str, str]] = []
    shell.note_agent_runs(monkeypatch, lambda call: calls.append((call.title, threading.current_thread().name)))
    return calls


def _executor(services: Services, release_seconds: float = 5.0) -> Executor:
    """An executor as a worker has one: what its threads do not run goes out a message each."""
    settings = services.settings.replace(batch_release_seconds=release_seconds)
    sender = shell.dispatcher(services)
    return Executor(
        settings,
        services.db,
        shell.coordinator(services),
        sender.cancel_flags,
        "test-worker",
        send_each=lambda run_id, items: sender.send_attempts(run_id, items, per_message=1),
    )


def _messages(services: Services) -> list[tuple[str, tuple[Any, ...]]]:
    """The (task name, args) of each message in the attempts queue, oldest first."""
    found = []
    for raw in reversed(services.redis.lrange(TASK_QUEUE, 0, -1)):
        message = json.loads(raw)
        found.append((message["headers"]["task"], eval(message["headers"]["argsrepr"])))  # noqa: S307 - our repr
    return found


def _deliver_singles(services: Services, executor: Executor) -> list[str]:
    """Deliver the queue's single-attempt messages to ``executor`` one by one, oldest first, as a
    worker receives them; what each run said."""
    said = []
    while services.redis.llen(TASK_QUEUE):
        _, (message_run, task_id, attempt) = _messages(services)[0]
        services.redis.rpop(TASK_QUEUE)
        said.append(executor.run_attempt(message_run, task_id, attempt))
    return said


def _start(
    services: Services, tasks: list[dict[str, Any]], batch: int = 8, name: str = "m"
) -> tuple[str, dict[str, str]]:
    """Start a run and send its first attempts as the API does, in messages of up to ``batch``."""
    run_id, ids = shell.start_run(services, [dict(t) for t in tasks], name=name)
    with services.transaction() as conn:
        queued = conn.execute(
            "SELECT task_id, attempt FROM attempts WHERE run_id = %s AND status = 'queued'",
            (run_id,),
        ).fetchall()
    order = {task_id: n for n, task_id in enumerate(ids.values())}
    items = sorted(((r["task_id"], r["attempt"]) for r in queued), key=lambda item: order[item[0]])
    assert Dispatcher(services.celery, services.redis, batch_attempts=batch).send_attempts(run_id, items)
    return run_id, ids


def _status(db: psycopg.Connection, run_id: str) -> str:
    return str(db.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()["status"])


def test_the_attempts_a_run_starts_together_go_in_as_few_messages_as_the_setting_allows(services: Services) -> None:
    run_id, ids = _start(services, FIVE)
    assert _messages(services) == [(RUN_TASKS, (run_id, [[ids[t], 1] for t in "abcde"]))]
    services.redis.delete(TASK_QUEUE)

    run_id, ids = _start(services, FIVE, batch=2, name="m2")
    assert _messages(services) == [
        (RUN_TASKS, (run_id, [[ids["a"], 1], [ids["b"], 1]])),
        (RUN_TASKS, (run_id, [[ids["c"], 1], [ids["d"], 1]])),
        (RUN_TASK, (run_id, ids["e"], 1)),
    ]
    services.redis.delete(TASK_QUEUE)

    run_id, ids = _start(services, FIVE, batch=1, name="m1")
    assert _messages(services) == [(RUN_TASK, (run_id, ids[t], 1)) for t in "abcde"]


def test_the_product_sends_them_in_messages_of_its_setting(services: Services) -> None:
    assert services.dispatcher.batch_attempts == services.settings.batch_attempts == 8


def test_the_thread_that_receives_a_message_of_several_runs_them_all_in_order(
    services: Services, agent_runs: list[tuple[str, str]], db: psycopg.Connection
) -> None:
    run_id, _ids = _start(services, FIVE)
    [(_, (message_run, items))] = _messages(services)
    services.redis.delete(TASK_QUEUE)
    batched_before = metrics._recorder._attempts.get("batched", 0)

    what = _executor(services).run_attempts(message_run, [(t, a) for t, a in items])

    assert what == "finished; then 4 attempt(s) of its message"
    assert [title for title, _ in agent_runs] == ["a", "b", "c", "d", "e"]
    assert len({thread for _, thread in agent_runs}) == 1
    assert _messages(services) == []  # nothing was sent on
    assert _status(db, run_id) == "completed"
    assert metrics._recorder._attempts.get("batched", 0) - batched_before == 4


def test_once_an_attempt_is_slow_the_ones_after_it_are_sent_on_a_message_each(
    services: Services, monkeypatch: pytest.MonkeyPatch, db: psycopg.Connection
) -> None:
    let_a_finish = threading.Event()
    ran: list[str] = []

    def note(call: Any) -> None:
        ran.append(call.title)
        if call.title == "a":  # a model call that takes a while
            assert let_a_finish.wait(10)

    shell.note_agent_runs(monkeypatch, note)
    run_id, ids = _start(services, FIVE)
    [(_, (_, items))] = _messages(services)
    services.redis.delete(TASK_QUEUE)
    released_before = metrics._recorder._attempts.get("released", 0)
    executor = _executor(services, release_seconds=0.05)
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(executor.run_attempts(run_id, [tuple(i) for i in items])))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while len(_messages(services)) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        # b..e went to the broker while a still runs: other threads (or workers) start them now
        assert _messages(services) == [(RUN_TASK, (run_id, ids[t], 1)) for t in "bcde"]
    finally:
        let_a_finish.set()
        thread.join(10)
    assert result == ["finished"] and ran == ["a"]  # the thread ran a alone
    assert metrics._recorder._attempts.get("released", 0) - released_before == 4
    assert set(_deliver_singles(services, executor)) == {"finished"}  # the released messages
    assert ran == ["a", "b", "c", "d", "e"] and _status(db, run_id) == "completed"


def test_an_attempt_of_the_message_already_claimed_elsewhere_is_skipped(
    services: Services, agent_runs: list[tuple[str, str]], db: psycopg.Connection
) -> None:
    run_id, ids = _start(services, FIVE)
    [(_, (_, items))] = _messages(services)
    other = _executor(services)
    assert other.run_attempt(run_id, ids["c"], 1) == "finished"  # (a duplicate delivered to another thread)

    what = _executor(services).run_attempts(run_id, [tuple(i) for i in items])

    assert what == "finished; then 4 attempt(s) of its message"
    assert sorted(title for title, _ in agent_runs) == ["a", "b", "c", "d", "e"]  # c ran once
    assert _status(db, run_id) == "completed"


def test_when_an_attempt_of_the_message_raises_it_and_the_rest_go_to_the_broker(
    services: Services, agent_runs: list[tuple[str, str]], db: psycopg.Connection
) -> None:
    run_id, ids = _start(services, FIVE)
    [(_, (_, items))] = _messages(services)
    services.redis.delete(TASK_QUEUE)
    executor = _executor(services)
    original = executor._run_attempt

    def claim_fails_for_c(run_id: str, task_id: str, attempt: int) -> str:
        if task_id == ids["c"]:
            raise psycopg.OperationalError("the server closed the connection before the claim")
        return original(run_id, task_id, attempt)

    executor._run_attempt = claim_fails_for_c  # type: ignore[method-assign]
    with pytest.raises(psycopg.OperationalError):
        executor.run_attempts(run_id, [tuple(i) for i in items])
    assert [title for title, _ in agent_runs] == ["a", "b"]
    assert sorted(args[1] for _, args in _messages(services)) == sorted(ids[t] for t in "cde")
    executor._run_attempt = original  # type: ignore[method-assign]
    _deliver_singles(services, executor)
    assert _status(db, run_id) == "completed"


def test_a_dependent_handed_off_by_an_attempt_of_the_message_runs_before_the_next_one(
    services: Services, agent_runs: list[tuple[str, str]], db: psycopg.Connection
) -> None:
    tasks = [{"title": "a"}, {"title": "b"}, {"title": "a2", "dependsOn": ["a"]}]
    run_id, _ids = _start(services, tasks)
    [(_, (_, items))] = _messages(services)
    services.redis.delete(TASK_QUEUE)
    executor = _executor(services)  # (the services' eager hand-off window: 2 s)

    what = executor.run_attempts(run_id, [tuple(i) for i in items])

    assert [title for title, _ in agent_runs] == ["a", "a2", "b"]
    assert what == "finished; then 1 attempt(s) of its message; then 1 attempt(s) handed off to this thread"
    assert _messages(services) == [] and _status(db, run_id) == "completed"


def test_the_workers_task_runs_a_message_of_several_and_a_warm_shutdown_sends_the_rest_on(
    services: Services, settings: Settings, agent_runs: list[tuple[str, str]], db: psycopg.Connection
) -> None:
    """Through the worker's own app: ``missions.run_tasks`` runs them all until Celery's
    ``worker_shutting_down``; after it, only the first, and the rest go back to the broker."""
    from celery.signals import worker_shutting_down

    from workers.wiring import worker_app

    app, worker_services = worker_app(settings)
    run_tasks = app.tasks[RUN_TASKS]
    try:
        before, _ = _start(services, FIVE)
        [(_, args)] = _messages(services)
        services.redis.delete(TASK_QUEUE)
        assert run_tasks(*args) == "finished; then 4 attempt(s) of its message"
        assert _status(db, before) == "completed"

        worker_shutting_down.send(sender="w@host", sig="SIGTERM", how="Warm", exitcode=0)
        after, ids = _start(services, FIVE, name="after")
        [(_, args)] = _messages(services)
        services.redis.delete(TASK_QUEUE)
        assert run_tasks(*args) == "finished"
        assert _messages(services) == [(RUN_TASK, (after, ids[t], 1)) for t in "bcde"]
    finally:
        worker_services.close()
