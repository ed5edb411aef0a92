"""The pure rules of webhooks and per-run inputs: retry delays, giving up, the payload, secrets and
the shallow merge of a run's data."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.inputs import merge_run_data
from orchestrator.webhooks import gives_up, make_secret, parse_secret, payload, retry_delay

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
objects = st.dictionaries(st.text(max_size=4), json_values, max_size=5)


def test_the_delay_doubles_from_the_base_up_to_the_cap() -> None:
    assert [retry_delay(n, 5, 3600, jitter=1.0) for n in range(1, 6)] == [5, 10, 20, 40, 80]
    assert retry_delay(20, 5, 3600, jitter=1.0) == 3600
    assert retry_delay(1, 5, 3600, jitter=0.0) == 2.5  # at least half of it


@given(st.integers(1, 10_000), st.floats(0.01, 3600), st.floats(0.01, 86_400), st.floats(0, 1))
def test_a_delay_is_between_half_and_all_of_the_capped_exponential(
    attempt: int, base: float, cap: float, jitter: float
) -> None:
    full = min(cap, base * 2.0 ** min(attempt - 1, 60))
    assert full / 2 <= retry_delay(attempt, base, cap, jitter) <= full


@given(st.integers(1, 200), st.floats(0, 1))
def test_delays_never_shrink_from_one_attempt_to_the_next_at_the_same_jitter(attempt: int, jitter: float) -> None:
    assert retry_delay(attempt + 1, 5, 3600, jitter) >= retry_delay(attempt, 5, 3600, jitter)


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError):
        retry_delay(0, 5, 3600, 0.5)


def test_the_defaults_retry_for_about_a_day() -> None:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    at, attempts = created, 1
    while True:
        due = at + timedelta(seconds=retry_delay(attempts, 5, 3600, jitter=0.5))
        if gives_up(created, due, 24 * 3600):
            break
        at, attempts = due, attempts + 1
    assert 23 * 3600 < (at - created).total_seconds() <= 24 * 3600
    assert 30 <= attempts <= 50


def test_the_payload_is_type_timestamp_and_data() -> None:
    at = datetime(2026, 12, 1, 12, 0, 1, tzinfo=UTC)
    assert payload("mission:done", {"runId": "run_1"}, at) == {
        "type": "mission:done",
        "timestamp": "2026-12-01T12:00:01Z",
        "data": {"runId": "run_1"},
    }


@given(st.binary(min_size=24, max_size=64))
def test_a_made_secret_parses_back_to_its_key(key: bytes) -> None:
    assert parse_secret(make_secret(key)) == key


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("c2VjcmV0", "starts with"),
        ("whsec_***", "base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64 bytes"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "24 to 64 bytes"),
    ],
)
def test_malformed_secrets_are_refused_saying_why(secret: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_secret(secret)


def test_run_data_replaces_top_level_keys_whole() -> None:
    mission = {"a": 1, "window": {"days": 7, "tz": "UTC"}}
    assert merge_run_data(mission, {"window": {"hours": 1}, "b": 2}) == {"a": 1, "window": {"hours": 1}, "b": 2}
    assert mission == {"a": 1, "window": {"days": 7, "tz": "UTC"}}  # the mission's own is untouched


@given(objects, objects)
def test_a_merged_key_comes_from_the_run_if_it_has_it_else_from_the_mission(mission: dict, run: dict) -> None:
    merged = merge_run_data(mission, run)
    assert merged.keys() == mission.keys() | run.keys()
    for key, value in merged.items():
        assert value == (run[key] if key in run else mission[key])


@given(json_values)
def test_without_run_data_the_mission_data_is_used_as_is(mission: object) -> None:
    assert merge_run_data(mission, None) == mission


@pytest.mark.parametrize(
    ("mission", "kind"), [([1], "an array"), ("x", "a string"), (3, "a number"), (True, "a boolean")]
)
def test_run_data_cannot_merge_into_a_mission_data_that_is_not_an_object(mission: object, kind: str) -> None:
    with pytest.raises(ValueError, match=f"is {kind}, not an object"):
        merge_run_data(mission, {"x": 1})
    assert merge_run_data(None, {"x": 1}) == {"x": 1}
