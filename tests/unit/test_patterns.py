"""Tenant patterns cannot stall a worker: a catastrophic ``regex`` expectation or JSON-schema
``pattern`` fails its check at the time limit (score 1, "pattern took longer than N s on the
output"), and while it runs the other threads of the process keep running (the GIL is released).

The catastrophic cases run in a child process with a deadline: with a pattern engine that holds
the GIL (``re``) the child would hang for hours, and a hang in this process would stop the test
run instead of failing the test."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from orchestrator.spec import Expectation
from workers.execution import patterns
from workers.execution.assessment import AssessmentContext, check, check_json_schema

ROOT = Path(__file__).resolve().parents[2]
EVIL = "a" * 40 + "!"
SLOW = "^(a|a)*$"  # exponential in re and in regex: it needs the time limit
NESTED = "(a+)+$"  # exponential in re; regex sees through it and answers at once
CHILD_DEADLINE = 20.0

CHILD = r"""
import resource
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a pattern that eats memory fails here, not the machine
import json, sys, threading, time
from orchestrator.spec import Expectation
from workers.execution.assessment import AssessmentContext, check

doc, output, timeout = json.loads(sys.argv[1]), sys.argv[2], float(sys.argv[3])
ctx = AssessmentContext()
ctx.pattern_timeout = timeout
count = 0
stop = False

def spin():
    global count
    while not stop:
        count += 1

spinner = threading.Thread(target=spin, daemon=True)
spinner.start()
time.sleep(0.2)
before, started = count, time.monotonic()
time.sleep(0.2)
rate = (count - before) / (time.monotonic() - started)  # iterations per second with the main thread idle
before, started = count, time.monotonic()
score, reason = check(Expectation.from_document(doc), output, ctx)
elapsed = time.monotonic() - started
progress = count - before
stop = True
print(json.dumps({"score": score, "reason": reason, "elapsed": elapsed, "progress": progress, "rate": rate}))
"""


def in_child(doc: dict[str, Any], output: str, timeout: float) -> dict[str, Any]:
    """Run one check in a fresh interpreter, with a thread counting beside it."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(doc), output, str(timeout)],
            check=False,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=CHILD_DEADLINE,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the check did not finish in {CHILD_DEADLINE:g} s: the pattern held the worker (and its GIL)")
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def assert_timed_out_with_threads_running(result: dict[str, Any], timeout: float) -> None:
    assert result["score"] == 1.0
    assert result["reason"] == f"pattern took longer than {timeout:g} s on the output"
    assert timeout - 0.05 <= result["elapsed"] < timeout + 0.5
    # The other thread ran while the pattern did: with the GIL held it would get one switch
    # interval (~5 ms) at most, here it gets a good share of the whole time.
    assert result["progress"] > 200_000
    assert result["progress"] / result["elapsed"] > 0.2 * result["rate"]


def test_a_catastrophic_regex_expectation_fails_within_the_limit() -> None:
    result = in_child({"type": "regex", "pattern": NESTED}, EVIL, 1.0)
    assert result["score"] == 1.0 and result["elapsed"] < 1.5


def test_a_regex_that_runs_out_of_time_fails_and_other_threads_keep_running() -> None:
    result = in_child({"type": "regex", "pattern": SLOW}, EVIL, 1.0)
    assert_timed_out_with_threads_running(result, 1.0)


def test_a_case_insensitive_regex_is_bounded_too() -> None:
    result = in_child({"type": "regex", "pattern": "^(A|AA)*$", "ignoreCase": True}, EVIL, 0.5)
    assert_timed_out_with_threads_running(result, 0.5)


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param({"type": "object", "properties": {"s": {"type": "string", "pattern": SLOW}}}, id="pattern"),
        pytest.param({"patternProperties": {SLOW: {"type": "integer"}}}, id="patternProperties"),
        pytest.param({"patternProperties": {SLOW: {}}, "additionalProperties": False}, id="additionalProperties"),
        pytest.param({"patternProperties": {SLOW: {}}, "unevaluatedProperties": False}, id="unevaluatedProperties"),
        pytest.param(
            {
                "$schema": "https://json-schema.org/draft/2019-09/schema",
                "patternProperties": {SLOW: {}},
                "unevaluatedProperties": False,
            },
            id="unevaluatedProperties-2019-09",
        ),
        pytest.param({"propertyNames": {"pattern": SLOW}}, id="propertyNames"),
        pytest.param(
            {
                "properties": {
                    "s": {"$schema": "http://json-schema.org/draft-07/schema#", "pattern": SLOW},
                    "a" * 40 + "!": {"$schema": "http://json-schema.org/draft-04/schema#", "pattern": SLOW},
                }
            },
            id="a-subschema-naming-another-draft",
        ),
        pytest.param(
            {"$defs": {"evil": {"pattern": SLOW}}, "properties": {"s": {"$ref": "#/$defs/evil"}}}, id="through-a-ref"
        ),
    ],
)
def test_a_json_schema_pattern_that_runs_out_of_time_fails_and_other_threads_keep_running(
    schema: dict[str, Any],
) -> None:
    output = json.dumps({"s": EVIL, EVIL: 1})
    result = in_child({"type": "json_schema", "schema": schema}, output, 0.5)
    assert_timed_out_with_threads_running(result, 0.5)


def test_a_catastrophic_json_schema_pattern_fails_within_the_limit() -> None:
    schema = {"properties": {"s": {"pattern": NESTED}}}
    result = in_child({"type": "json_schema", "schema": schema}, json.dumps({"s": EVIL}), 1.0)
    assert result["score"] == 1.0 and result["elapsed"] < 1.5
    assert result["reason"] == f"output does not match the schema at s: {EVIL!r} does not match {NESTED!r}"


def test_one_time_limit_covers_all_the_matches_of_a_check() -> None:
    schema = {"type": "array", "items": {"type": "string", "pattern": SLOW}}
    result = in_child({"type": "json_schema", "schema": schema}, json.dumps([EVIL] * 20), 0.5)
    assert_timed_out_with_threads_running(result, 0.5)  # not 20 times 0.5 s


HUGE = "(?:(?:a{1000}){1000}){1000}"  # regex's compiler would copy `a` a billion times


def test_a_pattern_whose_repeats_expand_too_far_is_refused_before_compiling() -> None:
    result = in_child({"type": "regex", "pattern": HUGE}, EVIL, 1.0)
    assert result["score"] == 1.0 and result["elapsed"] < 1.0
    assert result["reason"] == (
        f"the expectation's pattern is invalid: {HUGE!r} is too large: its counted repeats expand to more than "
        "100000 elements"
    )
    schema = {"properties": {"s": {"pattern": HUGE}}}
    result = in_child({"type": "json_schema", "schema": schema}, json.dumps({"s": EVIL}), 1.0)
    assert result["score"] == 1.0 and result["elapsed"] < 1.0
    assert result["reason"].startswith("the expectation's schema is invalid")


@pytest.mark.parametrize(
    ("pattern", "size"),
    [
        ("abc", 3),
        (r"\d{4}-\d{2}-\d{2}", 10),
        ("a{1000}b{1000}", 2000),
        ("((a{10}){10}){10}", 1000),
        ("(a{100}|b){100}", 10100),
        (".{0,1000000}", 1),  # only the minimum is copied
        (r"\p{L}{3}", 3),
        (r"\x{1000}", 1),  # braces of an escape are no repeat
        ("[{1000}]{2}", 2),  # nor are braces in a class
        (".{1000000}", 100_001),
        (HUGE, 100_001),
        ("(?:(?:ab|c{1000}){1000}|x){1000}", 100_001),
        ("(?:(?:a{999,1000}){999,1000}){999,1000}", 100_001),
    ],
)
def test_the_expansion_estimate_multiplies_nested_minimum_counts(pattern: str, size: int) -> None:
    assert patterns.expansion(pattern) == size


# -- in process: patterns that finish --------------------------------------------------------


def regex_check(pattern: str, output: str, **doc: Any) -> tuple[float, str]:
    return check(Expectation.from_document({"type": "regex", "pattern": pattern, **doc}), output, AssessmentContext())


def test_regex_expectations_still_match_and_fail_as_before() -> None:
    assert regex_check(r"\d+ passed", "12 passed, 0 failed") == (5.0, r"output matches /\d+ passed/")
    assert regex_check(r"^\d+ passed$", "12 passed, 0 failed") == (1.0, r"output does not match /^\d+ passed$/")
    assert regex_check("DONE", "all done", ignoreCase=True)[0] == 5.0
    assert regex_check("DONE", "all done")[0] == 1.0
    assert regex_check(r"(?m)^ok$", "x\nok\ny")[0] == 5.0
    score, reason = regex_check("(unclosed", "x")
    assert score == 1.0 and reason.startswith("the expectation's pattern is invalid: '(unclosed' does not compile")


def test_the_time_limit_comes_from_the_context_and_defaults_to_one_second() -> None:
    assert AssessmentContext().pattern_timeout == 1.0
    started = time.monotonic()
    ctx = AssessmentContext(pattern_timeout=0.2)
    score, reason = check(Expectation.from_document({"type": "regex", "pattern": SLOW}), EVIL, ctx)
    assert (score, reason) == (1.0, "pattern took longer than 0.2 s on the output")
    assert time.monotonic() - started < 0.7


def test_search_raises_pattern_timeout_once_the_budget_is_spent() -> None:
    budget = patterns.Budget(0.2)
    with pytest.raises(patterns.PatternTimeout):
        patterns.search(SLOW, EVIL, budget)
    with pytest.raises(patterns.PatternTimeout):  # spent: even a quick pattern is not run any more
        patterns.search("a", "a", budget)
    assert patterns.search("a", "A", patterns.Budget(1), patterns.IGNORECASE)
    with pytest.raises(patterns.PatternError):
        patterns.search("[", "x", patterns.Budget(1))


CASES = [
    ({"type": "string", "pattern": "^[a-z]+$"}, "abc"),
    ({"type": "string", "pattern": "^[a-z]+$"}, "Abc"),
    ({"patternProperties": {"^x-": {"type": "integer"}}}, {"x-a": 1, "x-b": "2"}),
    ({"patternProperties": {"^x-": {}}, "additionalProperties": False}, {"x-a": 1, "y": 2}),
    ({"patternProperties": {"^x-": {}, "^z": {}}, "additionalProperties": False}, {"y": 1, "w": 2}),
    ({"properties": {"a": {}}, "additionalProperties": False}, {"a": 1, "b": 2, "c": 3}),
    ({"properties": {"a": {}}, "additionalProperties": {"type": "string"}}, {"a": 1, "b": 2}),
    ({"patternProperties": {"^x-": {}}, "unevaluatedProperties": False}, {"x-a": 1, "y": 2}),
    ({"allOf": [{"patternProperties": {"^x-": {}}}], "unevaluatedProperties": False}, {"x-a": 1, "y": 2}),
    ({"allOf": [{"patternProperties": {"^x-": {}}}], "unevaluatedProperties": False}, {"x-a": 1}),
    ({"unevaluatedProperties": {"type": "string"}, "properties": {"a": {}}}, {"a": 1, "b": 2}),
    (
        {
            "$schema": "https://json-schema.org/draft/2019-09/schema",
            "patternProperties": {"^x-": {}},
            "unevaluatedProperties": False,
        },
        {"x-a": 1, "y": 2},
    ),
    (
        {"$defs": {"p": {"patternProperties": {"^x-": {}}}}, "$ref": "#/$defs/p", "unevaluatedProperties": False},
        {"x-a": 1, "y": 2},
    ),
    ({"if": {"required": ["a"]}, "then": {"properties": {"b": {"pattern": "^b$"}}}}, {"a": 1, "b": "c"}),
    ({"$schema": "http://json-schema.org/draft-04/schema#", "patternProperties": {"^x": {"type": "string"}}}, {"x": 1}),
]


@pytest.mark.parametrize(("schema", "value"), CASES)
def test_bounded_keywords_judge_exactly_like_jsonschema(schema: dict[str, Any], value: Any) -> None:
    stock = jsonschema.validators.validator_for(schema)(schema)
    expected = jsonschema.exceptions.best_match(stock.iter_errors(value))
    score, reason = check_json_schema(value, schema)
    if expected is None:
        assert (score, reason) == (5.0, "output matches the JSON schema")
    else:
        where = "/".join(str(p) for p in expected.absolute_path) or "(root)"
        assert (score, reason) == (1.0, f"output does not match the schema at {where}: {expected.message}")


def test_a_schema_with_a_pattern_that_does_not_compile_is_invalid() -> None:
    score, reason = check_json_schema("x", {"pattern": "(unclosed"})
    assert score == 1.0 and reason.startswith("the expectation's schema is invalid")
    score, reason = check_json_schema({"x": 1}, {"patternProperties": {"[": {}}})
    assert score == 1.0 and reason.startswith("the expectation's schema is invalid")


def test_the_bounded_validators_are_built_once_per_draft() -> None:
    assert patterns.validator_class({}) is patterns.validator_class({"type": "object"})
    draft7 = patterns.validator_class({"$schema": "http://json-schema.org/draft-07/schema#"})
    assert draft7 is not patterns.validator_class({})
    assert draft7.VALIDATORS["pattern"] is not jsonschema.Draft7Validator.VALIDATORS["pattern"]
