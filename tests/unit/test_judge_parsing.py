"""A judge's answer is parsed strictly: every criterion scored once with a number from 1 to 5,
matched by index, by text or by position; anything else is a clear problem, never an exception."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.execution.assessment import extract_json, parse_scores, parse_verdict
from workers.execution.providers.base import ToolCall, Turn

CRITERIA = ["All critical issues identified", "Feedback is actionable and specific"]


def scores(*items: dict[str, Any]) -> dict[str, Any]:
    return {"scores": list(items)}


def test_scores_matched_by_index_come_back_in_criteria_order() -> None:
    parsed = parse_scores(
        scores({"index": 2, "score": 3, "reason": "vague"}, {"index": 1, "score": 4.5, "reason": "ok"}), CRITERIA
    )
    assert parsed == [
        {"criterion": CRITERIA[0], "score": 4.5, "reason": "ok"},
        {"criterion": CRITERIA[1], "score": 3.0, "reason": "vague"},
    ]


def test_scores_are_matched_by_criterion_text_ignoring_case_and_spacing() -> None:
    parsed = parse_scores(
        scores(
            {"criterion": "feedback is ACTIONABLE and specific.", "score": 2, "reason": "r2"},
            {"criterion": CRITERIA[0], "score": 5, "reason": "r1"},
        ),
        CRITERIA,
    )
    assert isinstance(parsed, list)
    assert [p["score"] for p in parsed] == [5.0, 2.0]


def test_scores_without_index_or_text_are_matched_by_position_when_counts_agree() -> None:
    parsed = parse_scores([{"score": "4", "reason": "a"}, {"score": 1.5}], CRITERIA)
    assert isinstance(parsed, list)
    assert [(p["score"], p["reason"]) for p in parsed] == [(4.0, "a"), (1.5, "")]


def test_a_single_criterion_may_be_answered_with_a_bare_score_object() -> None:
    assert parse_scores({"score": 4, "reason": "fine"}, ["Is correct"]) == [
        {"criterion": "Is correct", "score": 4.0, "reason": "fine"}
    ]


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"verdict": "good"}, 'expected {"scores": [...]}'),
        ("4/5", 'expected {"scores": [...]}'),
        (scores({"index": 1, "score": 7, "reason": "x"}, {"index": 2, "score": 3}), "7 for criterion 1 is outside 1-5"),
        (scores({"index": 1, "score": 0}, {"index": 2, "score": 3}), "outside 1-5"),
        (scores({"index": 1, "score": "great"}, {"index": 2, "score": 3}), "no numeric score"),
        (scores({"index": 1, "score": True}, {"index": 2, "score": 3}), "no numeric score"),
        (scores({"index": 1, "score": 4}), "no score for criteria 2 (of 2)"),
        (scores({"index": 1, "score": 4}, {"index": 1, "score": 3}), "criterion 1 is scored twice"),
        (scores({"index": 9, "score": 4}), "names no known criterion"),
        (scores("five", {"index": 2, "score": 3}), "entry 1 of scores is not an object"),
        ([], "no score for criteria 1, 2"),
    ],
)
def test_an_unusable_answer_is_described_not_raised(payload: Any, problem: str) -> None:
    result = parse_scores(payload, CRITERIA)
    assert isinstance(result, str) and problem in result


def test_json_is_found_in_prose_and_code_fences() -> None:
    assert extract_json('{"scores": []}') == {"scores": []}
    assert extract_json('Sure! Here you go:\n```json\n{"scores": [{"score": 4}]}\n```\nThanks') == {
        "scores": [{"score": 4}]
    }
    assert extract_json("I think [it is fine] {not json} then [1, 2]") == [1, 2]
    assert extract_json("The output is good, 4 out of 5.") is None
    assert extract_json("   ") is None


def test_a_verdict_comes_from_the_tool_call_when_there_is_one() -> None:
    turn = Turn(
        "ignored prose",
        (ToolCall.from_raw("c1", "submit_scores", '{"scores": [{"index": 1, "score": 5, "reason": "r"}]}'),),
    )
    assert parse_verdict(turn, ["c"]) == [{"criterion": "c", "score": 5.0, "reason": "r"}]


def test_a_verdict_with_broken_tool_arguments_says_so() -> None:
    turn = Turn("", (ToolCall.from_raw("c1", "submit_scores", '{"scores": [{"index": 1, "sco'),))
    result = parse_verdict(turn, ["c"])
    assert isinstance(result, str) and "not a JSON object" in result


def test_a_prose_verdict_without_json_says_what_it_got() -> None:
    result = parse_verdict(Turn("Looks great to me!"), ["c"])
    assert isinstance(result, str) and "called no tool" in result and "Looks great" in result


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=20,
    )
)
def test_no_payload_makes_the_parser_raise(payload: Any) -> None:
    result = parse_scores(payload, CRITERIA)
    if isinstance(result, list):
        assert len(result) == len(CRITERIA) and all(1 <= r["score"] <= 5 for r in result)
    else:
        assert isinstance(result, str) and result


@given(st.text(max_size=200))
def test_no_text_makes_the_verdict_parser_raise(text: str) -> None:
    assert isinstance(parse_verdict(Turn(text), CRITERIA), (list, str))
