"""Wake-ups: a small message on the mission's channel, and never an error for the writer."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest

from workers.messaging.wakeups import WakeupHub, channel, publish_wakeup
from workers.support import metrics


def test_the_channel_of_a_mission_is_named_after_it() -> None:
    assert channel("msn_abc") == "mission:msn_abc"


def test_a_wakeup_names_the_run_and_event_on_the_mission_channel() -> None:
    client = fakeredis.FakeRedis()
    listener = client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe("mission:msn_1")
    listener.get_message(timeout=1)  # the subscription confirmation

    publish_wakeup(client, "msn_1", "run_1", 42)

    message = listener.get_message(timeout=1)
    assert message is not None
    assert message["channel"] == b"mission:msn_1"
    assert json.loads(message["data"]) == {"runId": "run_1", "eventId": 42}


def test_a_wakeup_for_another_mission_is_not_heard() -> None:
    client = fakeredis.FakeRedis()
    listener = client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe("mission:msn_1")
    listener.get_message(timeout=1)

    publish_wakeup(client, "msn_2", "run_2", 1)

    assert listener.get_message(timeout=0.1) is None


def test_a_redis_failure_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    server = fakeredis.FakeServer()
    server.connected = False
    client = fakeredis.FakeRedis(server=server)

    with caplog.at_level(logging.WARNING, logger="workers.messaging.wakeups"):
        publish_wakeup(client, "msn_1", "run_1", 42)

    assert "could not publish the wake-up for run run_1 event 42" in caplog.text


# The wake-up hub: one run's failure never stops the others, nor the hub's thread.


def _hub(latest_ids: Any = None) -> tuple[fakeredis.FakeRedis, WakeupHub]:
    client = fakeredis.FakeRedis()
    return client, WakeupHub(client, latest_ids, poll_seconds=0.02, retry_seconds=0.05, log_poll_seconds=0.05)


@pytest.fixture
def isolated() -> Iterator[dict[str, int]]:
    """The isolated failures this process counted (in-process tally, never flushed here)."""
    metrics._recorder.reset()
    yield metrics._recorder._isolated
    metrics._recorder.reset()


def test_a_run_whose_log_read_fails_on_its_own_leaves_the_other_runs_covered(isolated: dict[str, int]) -> None:
    reads: list[list[str]] = []

    def latest_ids(run_ids: list[str]) -> dict[str, int]:
        reads.append(run_ids)
        if "bad" in run_ids:
            raise ValueError("A string literal cannot contain NUL (0x00) characters.")
        return dict.fromkeys(run_ids, 5)

    _client, hub = _hub(latest_ids)
    try:
        streams = [hub.listen(channel("m"), run, 1.0) for run in ("r1", "bad", "r2")]
        good, bad, other = streams
        assert good.wait(2, after_id=0) and other.wait(2, after_id=0)  # their reads found event 5
        assert bad.wait(2, after_id=0)  # woken to read the log itself
        assert hub.covered()
        reads.clear()
        time.sleep(0.3)
        assert reads and all("bad" not in batch for batch in reads)  # left out of the next reads
        assert isolated == {"wakeup_hub": 1}
    finally:
        hub.close()


def test_a_stream_that_cannot_be_woken_does_not_keep_the_others_from_their_wakeups(
    isolated: dict[str, int],
) -> None:
    client, hub = _hub()
    try:
        broken, fine = hub.listen(channel("m"), "r1", 5.0), hub.listen(channel("m"), "r1", 5.0)
        # Subscribed before the first wake-up: one published earlier would be lost, and the stream's
        # catch-up after the confirmation would count a different number of failures.
        assert broken.confirmed.is_set() and fine.confirmed.is_set()

        def announce(event_id: int | None) -> None:
            raise RuntimeError("broken stream")

        broken.announce = announce  # type: ignore[method-assign]
        for event_id in (1, 2):
            publish_wakeup(client, "m", "r1", event_id)
            assert fine.wait(2, after_id=event_id - 1)
        assert hub.connects == 1  # not taken for a Redis failure: the connection was kept
        # (the hub may wake ``fine`` before it tries ``broken``: give the second failure its moment)
        deadline = time.monotonic() + 5
        while isolated != {"wakeup_hub": 2} and time.monotonic() < deadline:
            time.sleep(0.01)
        assert isolated == {"wakeup_hub": 2}
    finally:
        hub.close()


def test_a_read_that_breaks_the_hub_does_not_end_its_thread(isolated: dict[str, int]) -> None:
    answers: list[Any] = [None, None]  # a broken answer (not a mapping), twice, then a good one

    def latest_ids(run_ids: list[str]) -> Any:
        return answers.pop() if answers else {"r1": 3}

    client, hub = _hub(latest_ids)
    try:
        listener = hub.listen(channel("m"), "r1", 1.0)
        assert listener.wait(2, after_id=0)  # the read after the broken ones found event 3
        publish_wakeup(client, "m", "r1", 4)
        assert listener.wait(2, after_id=3)  # and the hub still relays wake-ups
        assert isolated == {"wakeup_hub": 2}
    finally:
        hub.close()


def test_a_message_the_hub_cannot_handle_is_skipped_and_the_next_one_arrives(
    monkeypatch: pytest.MonkeyPatch, isolated: dict[str, int]
) -> None:
    client, hub = _hub()
    handle = hub._handle
    failed: list[Any] = []

    def flaky(message: dict[str, Any]) -> None:
        if message["type"] == "message" and not failed:
            failed.append(message)
            raise KeyError("data")
        handle(message)

    monkeypatch.setattr(hub, "_handle", flaky)
    try:
        listener = hub.listen(channel("m"), "r1", 1.0)
        publish_wakeup(client, "m", "r1", 1)
        publish_wakeup(client, "m", "r1", 2)
        assert listener.wait(2, after_id=1)
        assert failed and hub.connects == 1
        assert isolated == {"wakeup_hub": 1}
    finally:
        hub.close()
