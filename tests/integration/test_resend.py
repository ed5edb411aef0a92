"""Lost messages do not starve behind a long queue: a queued attempt unclaimed for
``requeue_seconds`` is sent again whatever the broker queue holds, and the gaps between the
re-sends of one attempt double (up to a cap) while the queue is not empty, so a long but healthy
queue gets a few duplicates per attempt instead of one per tick."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta
from typing import Any

import psycopg

from tests.support import shell
from workers.coordination import runs
from workers.coordination.outcome import AfterCommit
from workers.coordination.tick import RESEND_BACKOFF_LIMIT, tick
from workers.messaging.dispatch import TASK_QUEUE, Dispatcher
from workers.store import missions
from workers.store.projects import ensure_project
from workers.support.clock import utcnow
from workers.wiring import Services

LIMITS = missions.Limits()


class Recording:
    """The dispatcher as the tick's resender, noting each attempt it sends again."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.sent: list[tuple[datetime, str]] = []
        self.now = utcnow()

    def send_attempts(self, run_id: str, attempts: list[tuple[str, int]]) -> bool:
        self.sent += [(self.now, task_id) for task_id, _ in attempts]
        return self.dispatcher.send_attempts(run_id, attempts)

    def send_assessment(self, run_id: str, task_id: str, attempt: int) -> bool:
        return self.dispatcher.send_assessment(run_id, task_id, attempt)

    def queue_empty(self) -> bool:
        return self.dispatcher.queue_empty()


def _start(services: Services, titles: list[str]) -> tuple[str, dict[str, str], AfterCommit]:
    document = {
        "name": "m",
        "tasks": [{"title": t, "description": "d", "assignTo": "a"} for t in titles],
        "team": {"name": "t", "volatile": True, "agents": [{"name": "a", "role": "r", "model": "scripted/x"}]},
    }
    with services.transaction() as conn:
        project = ensure_project(conn, "p")
        mission = missions.create_mission(conn, project, document, LIMITS)
        run_id, outcome, *_ = runs.execute(shell.uow(conn), project, mission.id, LIMITS, utcnow())
    return run_id, {t.title: t.id for t in mission.tasks}, outcome


def _queued_task_ids(services: Services) -> list[str]:
    """The task ids of the attempt messages in the broker queue (other messages left out)."""
    found = []
    for raw in services.redis.lrange(TASK_QUEUE, 0, -1):
        try:
            message: dict[str, Any] = json.loads(raw)
        except ValueError:
            continue
        args = message.get("headers", {}).get("argsrepr", "")
        found.append(args.split("'")[3])
    return found


def _long_queue(services: Services, messages: int = 500) -> None:
    """Messages of other attempts that no worker has taken yet (unrelated to the test's run)."""
    services.redis.rpush(TASK_QUEUE, *[f"unrelated message {n}" for n in range(messages)])


def _lose_message_of(services: Services, task_id: str) -> None:
    for raw in services.redis.lrange(TASK_QUEUE, 0, -1):
        if task_id.encode() in raw:
            assert services.redis.lrem(TASK_QUEUE, 1, raw) == 1
            return
    raise AssertionError(f"no message of {task_id} in the queue")


def test_a_lost_message_is_sent_again_while_the_queue_is_not_empty(services: Services) -> None:
    coordinator = shell.coordinator(services)
    _run_id, ids, outcome = _start(services, ["A", "B"])
    _long_queue(services)
    coordinator.after_commit(outcome)  # both messages behind the others
    _lose_message_of(services, ids["A"])
    assert sorted(_queued_task_ids(services)) == [ids["B"]]
    resender = Recording(shell.dispatcher(services))
    resender.now = utcnow() + timedelta(seconds=services.settings.requeue_seconds + 1)

    report = tick(coordinator, resender, services.settings, resender.now)

    assert not resender.queue_empty()
    assert report.resent == 2  # A's message was lost; B gets one harmless duplicate
    assert sorted(_queued_task_ids(services)) == sorted([ids["A"], ids["B"], ids["B"]])


def test_an_attempt_waiting_in_a_long_queue_is_not_sent_again_at_every_tick(
    services: Services, db: psycopg.Connection
) -> None:
    coordinator = shell.coordinator(services)
    _run_id, ids, outcome = _start(services, ["A"])
    _long_queue(services)
    coordinator.after_commit(outcome)
    created = db.execute("SELECT created_at FROM attempts").fetchone()["created_at"]
    requeue = timedelta(seconds=services.settings.requeue_seconds)
    resender = Recording(shell.dispatcher(services))
    step = requeue / 4
    ticks = 0
    resender.now = created + step
    end = created + requeue * (RESEND_BACKOFF_LIMIT * 4)
    while resender.now <= end:  # the tick runs every requeue_seconds / 4, and nobody claims the attempt
        tick(coordinator, resender, services.settings, resender.now)
        ticks += 1
        resender.now += step

    times = [at for at, task_id in resender.sent if task_id == ids["A"]]
    # In units of requeue_seconds: when each send went (the first at the attempt's creation).
    ages = [(at - created) / requeue for at in [created, *times]]
    for before, after in itertools.pairwise(ages):
        # The next re-send waits as long as the attempt had waited when last sent (at least r, at
        # most the cap), to the next tick: the age doubles, r, 2r, 4r... then a gap of the cap.
        wait = min(max(1.0, before), RESEND_BACKOFF_LIMIT)
        assert wait < after - before <= wait + 0.25, ages
    assert ages[-1] - ages[-2] > RESEND_BACKOFF_LIMIT  # it reached the cap
    assert len(times) <= 10 < ticks / 10  # 9 re-sends in 512 ticks (without the backoff: one every 4 ticks)
    assert _queued_task_ids(services).count(ids["A"]) == 1 + len(times)  # duplicates: harmless to the claim


def test_an_empty_queue_gets_every_unclaimed_attempt_again_at_once(services: Services) -> None:
    coordinator = shell.coordinator(services)
    _run_id, ids, outcome = _start(services, ["A"])
    coordinator.after_commit(outcome)
    resender = Recording(shell.dispatcher(services))
    resender.now = utcnow() + timedelta(seconds=services.settings.requeue_seconds + 1)
    assert tick(coordinator, resender, services.settings, resender.now).resent == 1  # first re-send
    services.redis.delete(TASK_QUEUE)  # Redis lost it again: the queue is empty
    resender.now += timedelta(seconds=services.settings.requeue_seconds + 1)
    assert tick(coordinator, resender, services.settings, resender.now).resent == 1  # no backoff: nothing waits
    assert _queued_task_ids(services) == [ids["A"]]
