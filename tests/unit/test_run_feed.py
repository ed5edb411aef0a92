"""``RunFeed``: the followers of one run share one read of the log per wake-up; a read that fails
leaves the next follower to read again; what the feed holds is bounded and never has a gap."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from api.http import sse
from api.http.sse import Frame, RunFeed


class Log:
    """The run's event log as ``_read_all`` sees it; counts the reads, can hold one or fail one."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.reads: list[int] = []  # the after_id of each read
        self.gate: threading.Event | None = None
        self.fail_next = False

    def read_all(self, db: Any, run_id: str, after_id: int) -> list[Frame]:
        self.reads.append(after_id)
        if self.gate is not None:
            assert self.gate.wait(5)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the database went away")
        return [Frame(i, False, f"id:{i}\n\n") for i in self.ids if i > after_id]


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> Log:
    log = Log()
    monkeypatch.setattr(sse, "_read_all", log.read_all)
    return log


def seeded(log: Log, *ids: int) -> RunFeed:
    feed = RunFeed("run_1")
    log.ids += ids
    feed.seed(0, [Frame(i, False, f"id:{i}\n\n") for i in ids])
    return feed


def ids(frames: list[Frame] | None) -> list[int] | None:
    return None if frames is None else [frame.id for frame in frames]


def test_an_unseeded_feed_sends_every_follower_to_the_log_itself(log: Log) -> None:
    assert RunFeed("run_1").events_after(None, 0, 5) is None
    assert log.reads == []


def test_an_announced_id_the_feed_holds_needs_no_read(log: Log) -> None:
    feed = seeded(log, 1, 2, 3)
    assert ids(feed.events_after(None, 1, 3)) == [2, 3]
    assert ids(feed.events_after(None, 3, 2)) == []
    assert log.reads == []


def test_a_poll_or_a_newer_id_reads_after_the_feeds_head(log: Log) -> None:
    feed = seeded(log, 1, 2)
    log.ids += [4, 7]
    assert ids(feed.events_after(None, 2, 7)) == [4, 7]
    assert ids(feed.events_after(None, 0, None)) == [1, 2, 4, 7]  # a poll: a read that starts now
    assert log.reads == [2, 7]


def test_followers_woken_together_share_the_one_read_in_flight(log: Log) -> None:
    feed = seeded(log, 1)
    log.ids += [2, 3]
    log.gate = threading.Event()
    answers: dict[int, list[int] | None] = {}

    def follow(after: int) -> None:
        answers[after] = ids(feed.events_after(None, after, 3))

    threads = [threading.Thread(target=follow, args=(after,)) for after in (1, 0, 2)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)  # one reads (held at the gate), the others wait for it
    log.gate.set()
    for thread in threads:
        thread.join(5)

    assert answers == {1: [2, 3], 0: [1, 2, 3], 2: [3]}
    assert log.reads == [1]


def test_a_read_that_fails_fails_its_reader_and_the_next_follower_reads_again(log: Log) -> None:
    feed = seeded(log, 1)
    log.ids += [2]
    log.fail_next = True
    with pytest.raises(RuntimeError):
        feed.events_after(None, 1, 2)
    assert ids(feed.events_after(None, 1, 2)) == [2]
    assert log.reads == [1, 1]


def test_the_feed_keeps_a_bounded_tail_and_sends_those_behind_it_to_the_log(
    log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RunFeed, "KEEP_FRAMES", 3)
    feed = seeded(log, 1, 2)
    log.ids += [3, 4, 5]
    assert ids(feed.events_after(None, 2, 5)) == [3, 4, 5]
    assert ids(feed.events_after(None, 2, 5)) == [3, 4, 5]  # 1 and 2 dropped: the floor is 2
    assert feed.events_after(None, 1, 5) is None  # behind the floor: it reads the log itself
    assert feed.events_after(None, 0, None) is None


def test_a_second_seed_changes_nothing(log: Log) -> None:
    feed = seeded(log, 1, 2)
    feed.seed(5, [Frame(9, False, "id:9\n\n")])
    assert ids(feed.events_after(None, 0, 2)) == [1, 2]
