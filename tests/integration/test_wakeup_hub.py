"""The wake-up hub against a real Redis: the event streams of one process share one pub/sub
connection, each stream hears only its run, the hub comes back after Redis drops it, and its reads
of the log make up for the wake-ups pub/sub lost."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis

from workers.messaging.wakeups import WakeupHub, channel, publish_wakeup

CONFIRM = 2.0


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as connection:
        yield connection


@pytest.fixture
def hub(client: redis.Redis) -> Iterator[WakeupHub]:
    hub = WakeupHub(client, retry_seconds=0.1)
    yield hub
    hub.close()


def subscribers(client: redis.Redis, mission_id: str) -> int:
    return int(dict(client.pubsub_numsub(channel(mission_id)))[channel(mission_id).encode()])


def eventually(check: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_the_streams_of_a_process_share_one_connection(client: redis.Redis, hub: WakeupHub) -> None:
    listeners = [
        hub.listen(channel(mission), run, CONFIRM)
        for mission, run in [("m1", "r1"), ("m1", "r1"), ("m1", "r2"), ("m2", "r3"), ("m3", "r4")]
    ]
    assert all(listener.confirmed.is_set() for listener in listeners)
    assert [subscribers(client, m) for m in ("m1", "m2", "m3")] == [1, 1, 1]
    assert hub.connects == 1
    for listener in listeners:
        listener.close()
    assert eventually(lambda: [subscribers(client, m) for m in ("m1", "m2", "m3")] == [0, 0, 0])
    assert hub.channels() == set()


def test_a_wakeup_reaches_the_streams_of_its_run_and_no_other(client: redis.Redis, hub: WakeupHub) -> None:
    first, second = hub.listen(channel("m1"), "r1", CONFIRM), hub.listen(channel("m1"), "r1", CONFIRM)
    other_run, other_mission = hub.listen(channel("m1"), "r2", CONFIRM), hub.listen(channel("m2"), "r1", CONFIRM)
    publish_wakeup(client, "m1", "r1", 7)
    assert first.wait(2, after_id=0) and second.wait(2, after_id=6)
    assert not other_run.wait(0.2, after_id=0) and not other_mission.wait(0.2, after_id=0)
    publish_wakeup(client, "m1", "r1", 8)
    assert not first.wait(2, after_id=8)  # woken, but nothing after what the stream already sent


def test_an_unreadable_wakeup_wakes_every_stream_of_its_mission(client: redis.Redis, hub: WakeupHub) -> None:
    listeners = [hub.listen(channel("m1"), run, CONFIRM) for run in ("r1", "r2")]
    client.publish(channel("m1"), "not json")
    assert all(listener.wait(2, after_id=10**9) for listener in listeners)


def test_the_hub_resubscribes_after_redis_drops_its_connection(client: redis.Redis, hub: WakeupHub) -> None:
    listener = hub.listen(channel("m1"), "r1", CONFIRM)
    for entry in client.client_list(_type="pubsub"):
        client.client_kill_filter(_id=entry["id"])
    assert eventually(lambda: hub.connects >= 2 and hub.channels() == {channel("m1")})
    publish_wakeup(client, "m1", "r1", 3)
    assert listener.wait(2, after_id=0)


def test_without_redis_a_stream_gets_a_listener_that_is_never_woken(redis_url: str) -> None:
    from workers.support.embedded import free_port

    unreachable = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    hub = WakeupHub(unreachable, retry_seconds=0.1)
    try:
        started = time.monotonic()
        listener = hub.listen(channel("m1"), "r1", 0.5)
        assert not listener.confirmed.is_set() and time.monotonic() - started < 2
        assert not listener.wait(0.2, after_id=0)
        listener.close()
    finally:
        hub.close()
        unreachable.close()


def test_the_hub_reads_the_log_for_the_wakeups_redis_lost(client: redis.Redis) -> None:
    latest = {"r1": 7}
    reads: list[list[str]] = []

    def latest_ids(run_ids: list[str]) -> dict[str, int]:
        reads.append(run_ids)
        return {run: last for run, last in latest.items() if run in run_ids}

    hub = WakeupHub(client, latest_ids, log_poll_seconds=0.1)
    try:
        listener, other = hub.listen(channel("m1"), "r1", CONFIRM), hub.listen(channel("m2"), "r2", CONFIRM)
        assert listener.wait(2, after_id=5)  # no publish: the hub's read found event 7
        assert not listener.wait(0.5, after_id=7)  # read again and again, nothing after 7
        assert not other.wait(0.3, after_id=0)  # r2 has no events
        latest["r1"] = 8
        assert listener.wait(2, after_id=7)
        assert hub.covered()
        assert sorted(reads[-1]) == ["r1", "r2"]  # one read for every run with streams
    finally:
        hub.close()


def test_a_hub_that_cannot_read_the_log_says_so(client: redis.Redis) -> None:
    def broken(run_ids: list[str]) -> dict[str, int]:
        raise OSError("no database")

    hub = WakeupHub(client, broken, log_poll_seconds=0.1)
    try:
        listener = hub.listen(channel("m1"), "r1", CONFIRM)
        time.sleep(0.3)
        assert not hub.covered()  # streams read the log themselves
        publish_wakeup(client, "m1", "r1", 2)
        assert listener.wait(2, after_id=0)  # Redis wake-ups still arrive
    finally:
        hub.close()
    assert not WakeupHub(client).covered()  # a hub without a log to read never covers the streams
