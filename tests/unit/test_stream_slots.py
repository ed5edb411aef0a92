"""The count of open event streams per API key (workers/messaging/streams.py), on fakeredis."""

from __future__ import annotations

import time

import fakeredis
import pytest
import redis

from workers.messaging.streams import PREFIX, StreamSlots


@pytest.fixture
def slots() -> StreamSlots:
    return StreamSlots(fakeredis.FakeRedis(), ttl=30)


def test_a_key_gets_at_most_its_limit_of_slots_and_a_released_one_is_free_again(slots: StreamSlots) -> None:
    held = [slots.acquire("key_a", 2) for _ in range(2)]
    assert all(slot is not None and slot.counted for slot in held)
    assert slots.acquire("key_a", 2) is None
    assert slots.acquire("key_b", 2) is not None  # another key counts on its own
    held[0].release()  # type: ignore[union-attr]
    held[0].release()  # type: ignore[union-attr]  # (twice changes nothing)
    assert slots.open_count("key_a") == 1
    assert slots.acquire("key_a", 2) is not None


def test_a_slot_nobody_refreshes_is_dropped_after_the_ttl(slots: StreamSlots) -> None:
    stale = slots.acquire("key_a", 1)
    assert stale is not None and slots.acquire("key_a", 1) is None
    slots.client.zadd(PREFIX + "key_a", {stale.member: time.time() - 31})  # its process died 31 s ago
    assert slots.open_count("key_a") == 0
    assert slots.acquire("key_a", 1) is not None


def test_a_refresh_keeps_a_slot_alive(slots: StreamSlots) -> None:
    slot = slots.acquire("key_a", 1)
    assert slot is not None
    slots.client.zadd(PREFIX + "key_a", {slot.member: time.time() - 29})
    slot._refreshed -= slots.ttl  # (due: refreshes are at most every ttl/4)
    slot.refresh()
    assert float(slots.client.zscore(PREFIX + "key_a", slot.member)) > time.time() - 2  # type: ignore[arg-type]
    assert slots.client.ttl(PREFIX + "key_a") > 0  # the set itself expires when every stream is gone


def test_redis_down_lets_the_stream_through_uncounted() -> None:
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    slots = StreamSlots(unreachable, ttl=30)
    slot = slots.acquire("key_a", 1)
    assert slot is not None and not slot.counted
    slot.refresh()
    slot.release()  # (nothing raises)
