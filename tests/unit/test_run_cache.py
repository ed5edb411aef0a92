"""The run store's in-process pieces: the cache's staleness hint, the per-run mutexes, and the rows a
step writes."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from orchestrator.engine import start_run
from orchestrator.spec import MissionSpec
from workers.store.run_state import KeyedLocks, Rows, RunCache, Stored

SPEC = MissionSpec.from_document(
    {
        "name": "m",
        "tasks": [{"id": "task_a", "title": "A", "description": "d", "assignTo": "a"}],
        "team": {"name": "t", "agents": [{"name": "a", "model": "scripted/x"}]},
    }
)
STATE = start_run("run_1", "msn_1", SPEC, datetime(2026, 11, 29, tzinfo=UTC)).state


def test_a_run_seen_moved_on_elsewhere_is_not_likely_current_until_seen_current_again() -> None:
    cache = RunCache()
    cache.put("run_1", Stored(0, 0, STATE, "t0"))
    assert cache.likely_current("run_1") is not None
    cache.note_stale("run_1")
    assert cache.likely_current("run_1") is None
    assert cache.get("run_1") is not None  # still there for an incremental read
    cache.note_current("run_1")
    assert cache.likely_current("run_1") is not None


def test_the_staleness_hint_goes_with_the_entry() -> None:
    cache = RunCache(size=1)
    cache.note_stale("run_0")  # nothing cached: nothing to remember
    cache.put("run_1", Stored(0, 0, STATE, "t0"))
    cache.note_stale("run_1")
    cache.put("run_2", Stored(0, 0, STATE, "t0"))  # evicts run_1
    cache.put("run_1", Stored(1, 0, STATE, "t1"))
    assert cache.likely_current("run_1") is not None
    cache.note_stale("run_1")
    cache.forget("run_1")
    cache.put("run_1", Stored(2, 0, STATE, "t2"))
    assert cache.likely_current("run_1") is not None


def test_keyed_locks_serialise_one_key_and_not_two() -> None:
    locks = KeyedLocks()
    inside: dict[str, int] = {"a": 0, "b": 0}
    most: dict[str, int] = {"a": 0, "b": 0}
    both = threading.Event()

    def use(key: str) -> None:
        with locks.hold(key):
            inside[key] += 1
            most[key] = max(most[key], inside[key])
            if inside["a"] and inside["b"]:
                both.set()
            time.sleep(0.02)
            inside[key] -= 1

    threads = [threading.Thread(target=use, args=(key,)) for key in "aabbaabb"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert most == {"a": 1, "b": 1}
    assert both.is_set()  # the two keys were held at the same time
    assert not locks._locks  # nothing kept once nobody holds a key


def test_a_report_goes_into_the_last_mission_done_of_a_step_and_nowhere_else() -> None:
    first = {"status": "completed"}
    rows = Rows(
        event_types=["task:status", "mission:done", "mission:status", "mission:done"],
        event_data=[{"status": "completed"}, first, {"status": "completed"}, {"status": "completed"}],
    )
    rows.add_report({"totals": {"tasks": 1}})
    assert rows.event_data[3] == {"status": "completed", "report": {"totals": {"tasks": 1}}}
    assert rows.event_data[1] is first and "report" not in first  # (the decision's own payload is not changed)
    assert all("report" not in data for data in rows.event_data[:3])
    nothing = Rows(event_types=["task:status"], event_data=[{"status": "running"}])
    nothing.add_report({"totals": {}})  # a step that logs no mission:done: nothing to carry it
    assert nothing.event_data == [{"status": "running"}]
