"""Messages of several attempts: how the dispatcher groups them, and how a worker thread's batch
hands each attempt out once, either to the thread or to the releaser that sends it on."""

from __future__ import annotations

import threading
import time

import pytest

from workers.execution.batches import Batch, Releaser
from workers.messaging.dispatch import batches


@pytest.mark.parametrize(
    ("count", "most", "sizes"),
    [(0, 8, []), (1, 8, [1]), (5, 8, [5]), (8, 8, [8]), (9, 8, [5, 4]), (17, 8, [6, 6, 5]), (3, 1, [1, 1, 1])],
)
def test_attempts_go_in_as_few_even_groups_as_the_limit_allows_in_their_order(
    count: int, most: int, sizes: list[int]
) -> None:
    items = [(f"t{i}", 1) for i in range(count)]
    groups = batches(items, most)
    assert [len(g) for g in groups] == sizes
    assert [item for g in groups for item in g] == items


def test_a_batch_hands_its_attempts_to_its_thread_in_order_and_notes_when() -> None:
    batch = Batch("r", [("a", 1), ("b", 2)], now=10.0)
    assert batch.take(11.0) == ("a", 1) and batch.taken_at == 11.0
    assert batch.take(12.5) == ("b", 2) and batch.taken_at == 12.5
    assert batch.take(13.0) is None and batch.taken_at == 12.5


def test_what_is_released_is_never_taken_and_is_released_once() -> None:
    batch = Batch("r", [("a", 1), ("b", 1), ("c", 1)], now=0.0)
    assert batch.take(1.0) == ("a", 1)
    assert batch.release() == [("b", 1), ("c", 1)]
    assert batch.take(2.0) is None
    assert batch.release() == []


def _take_all(batch: Batch, taken: list[tuple[str, int]]) -> None:
    while (item := batch.take(time.monotonic())) is not None:
        taken.append(item)


def test_a_thread_taking_and_a_releaser_releasing_at_once_share_every_attempt_exactly_once() -> None:
    for _ in range(50):
        items = [(f"t{i}", 1) for i in range(200)]
        batch = Batch("r", items, now=0.0)
        taken: list[tuple[str, int]] = []
        worker = threading.Thread(target=_take_all, args=(batch, taken))
        worker.start()
        released = batch.release()
        worker.join()
        assert sorted(taken + released) == sorted(items)


def _releaser(window: float) -> tuple[Releaser, list[tuple[str, list[tuple[str, int]]]]]:
    sent: list[tuple[str, list[tuple[str, int]]]] = []
    return Releaser(window, lambda run_id, items: sent.append((run_id, items))), sent


def test_a_batch_is_due_once_its_thread_has_taken_nothing_for_the_window() -> None:
    releaser, _ = _releaser(0.5)
    quiet, busy = Batch("quiet", [("a", 1)], now=100.0), Batch("busy", [("b", 1)], now=100.0)
    releaser._batches |= {quiet, busy}  # (added without the thread: due() is what it calls)
    busy.taken_at = 100.4
    assert releaser.due(100.49) == []
    assert releaser.due(100.5) == [quiet]
    assert releaser.due(100.6) == []  # taken out: due once
    assert releaser.due(100.9) == [busy]


def test_the_releasers_thread_sends_on_the_rest_of_a_batch_whose_thread_is_stuck() -> None:
    releaser, sent = _releaser(0.02)
    batch = Batch("r", [("b", 1), ("c", 1)], now=time.monotonic())
    releaser.add(batch)
    deadline = time.monotonic() + 5
    while not sent and time.monotonic() < deadline:
        time.sleep(0.005)
    assert sent == [("r", [("b", 1), ("c", 1)])]
    assert batch.take(time.monotonic()) is None and releaser.released == 2


def test_a_batch_whose_thread_keeps_taking_is_not_released() -> None:
    releaser, sent = _releaser(0.3)
    batch = Batch("r", [(f"t{i}", 1) for i in range(40)], now=time.monotonic())
    releaser.add(batch)
    taken = 0
    while batch.take(time.monotonic()) is not None:  # one every 5 ms: 0.2 s in all, never 0.3 s idle
        taken += 1
        time.sleep(0.005)
    releaser.discard(batch)
    assert taken == 40 and sent == []


def test_a_shutdown_releases_every_batch_and_each_one_added_later() -> None:
    releaser, sent = _releaser(60)
    first = Batch("r1", [("a", 1)], now=time.monotonic())
    releaser.add(first)
    releaser.release_all()
    assert sent == [("r1", [("a", 1)])]
    releaser.add(Batch("r2", [("b", 1), ("c", 2)], now=time.monotonic()))
    assert sent[1:] == [("r2", [("b", 1), ("c", 2)])]


def test_a_send_that_fails_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def fail(run_id: str, items: list[tuple[str, int]]) -> None:
        raise ConnectionError("broker down")

    releaser = Releaser(60, fail)
    releaser.release_all()
    releaser.add(Batch("r", [("a", 1)], now=0.0))  # (released at once: the worker is stopping)
    assert "could not send on 1 attempt(s) of run r" in caplog.text
