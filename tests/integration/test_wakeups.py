"""The background wake-up publisher against a real Redis."""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any

import pytest

from workers.messaging.wakeups import WakeupPublisher, channel
from workers.wiring import Services


class Listener:
    """A subscription to the channels of some missions, collecting the wake-ups it receives."""

    def __init__(self, services: Services, *missions: str) -> None:
        self.pubsub = services.redis.pubsub()
        self.pubsub.subscribe(*(channel(m) for m in missions))
        confirmed = 0
        while confirmed < len(missions):
            message = self.pubsub.get_message(timeout=2)
            assert message is not None, "Redis did not confirm the subscription"
            confirmed += message["type"] == "subscribe"

    def received(self, settle: float = 0.3) -> list[tuple[str, dict[str, Any]]]:
        out = []
        deadline = time.monotonic() + settle
        while (left := deadline - time.monotonic()) > 0:
            message = self.pubsub.get_message(timeout=left)
            if message is not None and message["type"] == "message":
                out.append((message["channel"].decode(), json.loads(message["data"])))
        return out

    def close(self) -> None:
        self.pubsub.close()


def test_a_lone_wake_up_is_sent_at_once(services: Services) -> None:
    listener = Listener(services, "msn_a")
    publisher = WakeupPublisher(services.redis)
    started = time.monotonic()
    publisher.publish("msn_a", "run_a", 7)
    message = listener.pubsub.get_message(timeout=2)
    while message is not None and message["type"] != "message":
        message = listener.pubsub.get_message(timeout=2)
    assert message is not None and json.loads(message["data"]) == {"runId": "run_a", "eventId": 7}
    assert time.monotonic() - started < 0.5
    listener.close()


def test_wake_ups_pending_together_go_out_once_per_run_with_the_highest_event_id(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = Listener(services, "msn_a", "msn_b")
    publisher = WakeupPublisher(services.redis)
    real, gate, busy = services.redis.pipeline, threading.Event(), threading.Event()

    def slow_first(*args: Any, **kwargs: Any) -> Any:
        if not busy.is_set():
            busy.set()
            gate.wait(5)  # the sender is busy with the first batch while the others queue up
        return real(*args, **kwargs)

    monkeypatch.setattr(services.redis, "pipeline", slow_first)
    publisher.publish("msn_a", "run_a", 1)
    assert busy.wait(2)
    for event_id in (3, 9, 5, 8):
        publisher.publish("msn_a", "run_a", event_id)
    publisher.publish("msn_b", "run_b", 4)
    gate.set()
    assert publisher.flush()
    got = listener.received()
    assert got[0] == ("mission:msn_a", {"runId": "run_a", "eventId": 1})
    assert sorted(got[1:], key=lambda item: item[1]["runId"]) == [
        ("mission:msn_a", {"runId": "run_a", "eventId": 9}),
        ("mission:msn_b", {"runId": "run_b", "eventId": 4}),
    ]
    assert publisher.sent == 3
    listener.close()


def test_many_threads_publishing_lose_no_run_and_no_latest_event(services: Services) -> None:
    listener = Listener(services, "msn_m")
    publisher = WakeupPublisher(services.redis)

    def steps(run: int) -> None:
        for event_id in range(1, 51):
            publisher.publish("msn_m", f"run_{run}", event_id)

    threads = [threading.Thread(target=steps, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert publisher.flush()
    latest: dict[str, int] = {}
    for _, payload in listener.received():
        assert payload["eventId"] > latest.get(payload["runId"], 0)  # never an older id after a newer one
        latest[payload["runId"]] = payload["eventId"]
    assert latest == {f"run_{n}": 50 for n in range(8)}
    assert publisher.sent < 8 * 50  # coalesced
    listener.close()


def test_a_redis_failure_drops_that_batch_and_the_next_one_is_sent(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = Listener(services, "msn_f")
    publisher = WakeupPublisher(services.redis)
    real = services.redis.pipeline
    calls = {"n": 0}

    def failing_once(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("redis is restarting")
        return real(*args, **kwargs)

    monkeypatch.setattr(services.redis, "pipeline", failing_once)
    publisher.publish("msn_f", "run_f", 1)
    assert publisher.flush()
    publisher.publish("msn_f", "run_f", 2)
    assert publisher.flush()
    assert [p for _, p in listener.received()] == [{"runId": "run_f", "eventId": 2}]
    listener.close()


def test_a_busy_publisher_sends_at_most_once_per_interval(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    listener = Listener(services, "msn_busy")
    publisher = WakeupPublisher(services.redis, min_interval=0.05)
    real, sends = services.redis.pipeline, []

    def counted(*args: Any, **kwargs: Any) -> Any:
        sends.append(time.monotonic())
        return real(*args, **kwargs)

    monkeypatch.setattr(services.redis, "pipeline", counted)
    started = time.monotonic()
    event_id = 0
    while time.monotonic() - started < 0.5:  # a step every 2 ms, for half a second
        event_id += 1
        publisher.publish("msn_busy", f"run_{event_id % 7}", event_id)
        time.sleep(0.002)
    assert publisher.flush()
    assert len(sends) <= 0.5 / 0.05 + 2  # about 11, not about 250
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    assert min(gaps) >= 0.045
    latest: dict[str, int] = {}
    for _, payload in listener.received():
        latest[payload["runId"]] = max(latest.get(payload["runId"], 0), payload["eventId"])
    assert latest == {f"run_{n % 7}": n for n in range(event_id - 6, event_id + 1)}
    listener.close()
