"""The broker side against a real Redis: Missions' kombu transport and batched sends."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import pytest

from workers.messaging import broker
from workers.messaging.dispatch import RUN_TASK, TASK_QUEUE, Dispatcher
from workers.wiring import Services


def _queued(services: Services) -> list[dict[str, Any]]:
    """The Celery messages waiting in the task queue, oldest first, as (task name, args)."""
    out = []
    for raw in reversed(services.redis.lrange(TASK_QUEUE, 0, -1)):
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        out.append({"task": message["headers"]["task"], "args": body[0]})
    return out


def test_plain_redis_urls_get_the_client_reusing_transport_and_others_keep_kombus() -> None:
    assert broker.transport_for("redis://127.0.0.1:6379/0") == broker.TRANSPORT
    assert broker.transport_for("rediss://h:6380/0?ssl_cert_reqs=required") is None
    assert broker.transport_for("unix:///tmp/redis.sock") is None


def test_a_channel_reuses_one_client_until_its_pool_is_rebuilt(services: Services) -> None:
    assert services.celery.conf.broker_transport == broker.TRANSPORT
    with services.celery.connection_for_write() as connection:
        channel = connection.default_channel
        assert isinstance(channel, broker.Channel)
        client = channel._create_client()
        assert channel._create_client() is client
        assert client.ping()
        channel._disconnect_pools()  # what kombu does after a fork or a lost connection
        rebuilt = channel._create_client()
        assert rebuilt is not client and rebuilt.ping()
        assert channel._create_client(asynchronous=True) is not rebuilt  # the consumer's own client


def test_the_attempts_of_one_step_are_sent_together_in_order(services: Services) -> None:
    services.redis.delete(TASK_QUEUE)
    dispatcher = Dispatcher(services.celery, services.redis)
    assert dispatcher.send_attempts("run_1", [("task_a", 1), ("task_b", 1), ("task_c", 2)])
    assert _queued(services) == [
        {"task": RUN_TASK, "args": ["run_1", "task_a", 1]},
        {"task": RUN_TASK, "args": ["run_1", "task_b", 1]},
        {"task": RUN_TASK, "args": ["run_1", "task_c", 2]},
    ]


def test_many_threads_sending_at_once_lose_no_message(services: Services) -> None:
    services.redis.delete(TASK_QUEUE)
    dispatcher = Dispatcher(services.celery, services.redis)

    def send(n: int) -> None:
        for i in range(25):
            dispatcher.send_attempts(f"run_{n}", [(f"t{i}", 1), (f"u{i}", 1)])

    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    queued = _queued(services)
    assert len(queued) == 8 * 25 * 2
    assert len({tuple(m["args"]) for m in queued}) == len(queued)


def test_a_broker_that_is_down_fails_the_send_without_raising(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatcher = Dispatcher(services.celery, services.redis)

    def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("broker down")

    monkeypatch.setattr(services.celery, "send_task", down)
    assert dispatcher.send_attempts("run_1", [("task_a", 1)]) is False
