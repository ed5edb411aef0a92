"""Wake-ups: a small message on the mission's channel, and never an error for the writer."""

from __future__ import annotations

import json
import logging

import fakeredis
import pytest

from workers.messaging.wakeups import channel, publish_wakeup


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
