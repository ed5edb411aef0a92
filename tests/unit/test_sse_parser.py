"""The test SSE client reads a stream the way a browser's EventSource would."""

from __future__ import annotations

import pytest

from tests.support.sse import SseEvent, _line_end, iter_sse


def parse(text: str) -> list[SseEvent]:
    return list(iter_sse(text.splitlines(keepends=True)))


def test_an_event_carries_its_id_type_and_json_data() -> None:
    stream = 'event:task:status\ndata:{"taskId": "task_1", "status": "running"}\nid:7\n\n'

    assert parse(stream) == [SseEvent(7, "task:status", {"taskId": "task_1", "status": "running"})]


def test_comments_and_the_retry_field_are_skipped() -> None:
    stream = "retry: 2000\n\n: keep-alive\n\nevent: mission:done\ndata: {}\nid: 9\n\n: keep-alive\n\n"

    assert parse(stream) == [SseEvent(9, "mission:done", {})]


def test_multi_line_data_is_joined_with_newlines() -> None:
    stream = 'data: {"a":\ndata:  1}\n\ndata: first\ndata: second\n\n'

    assert parse(stream) == [SseEvent(None, None, {"a": 1}), SseEvent(None, None, "first\nsecond")]


def test_one_space_after_the_colon_is_removed_and_no_more() -> None:
    assert parse("data:  padded\n\n") == [SseEvent(None, None, " padded")]


def test_crlf_and_bytes_lines_are_understood() -> None:
    lines = [b"event: task:output\r\n", b'data: {"chunk": "h\\u00e9"}\r\n', b"id: 3\r\n", b"\r\n"]

    assert list(iter_sse(lines)) == [SseEvent(3, "task:output", {"chunk": "hé"})]


def test_data_that_is_not_a_json_object_stays_text() -> None:
    assert parse("data: [1, 2]\n\ndata: not json\n\n") == [
        SseEvent(None, None, "[1, 2]"),
        SseEvent(None, None, "not json"),
    ]


def test_an_event_without_data_is_reported_with_none() -> None:
    assert parse("event: ping\n\n") == [SseEvent(None, "ping", None)]


def test_an_event_cut_off_before_its_blank_line_is_dropped() -> None:
    assert parse('data: {"complete": true}\n\ndata: {"cut') == [SseEvent(None, None, {"complete": True})]


def test_fields_do_not_leak_into_the_next_event() -> None:
    stream = "event: a\ndata: 1\nid: 1\n\ndata: 2\n\n"

    assert parse(stream) == [SseEvent(1, "a", "1"), SseEvent(None, None, "2")]


def test_an_id_that_is_not_a_number_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a whole number"):
        parse("id: abc\ndata: x\n\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("abc", None), ("ab\ncd", (2, 3)), ("ab\r\ncd", (2, 4)), ("ab\rcd", (2, 3)), ("ab\r", None)],
)
def test_a_line_ends_at_lf_crlf_or_cr_but_a_trailing_cr_waits_for_more(
    text: str, expected: tuple[int, int] | None
) -> None:
    assert _line_end(text) == expected
