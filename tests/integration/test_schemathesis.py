"""Every operation of the OpenAPI document, fed requests generated from that document (valid ones and
ones that break it) by schemathesis, answers with a status below 500 and, for a JSON 4xx, the error
shape. Bounded: a few examples per operation, so that it runs in CI."""

from __future__ import annotations

from typing import Any

import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

EXAMPLES = 12


def test_no_generated_request_gets_a_server_error(app: Flask, auth: dict[str, str]) -> None:
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", app)
    failures: list[str] = []
    operations = 0
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        cases = operation.as_strategy(generation_mode=GenerationMode.POSITIVE) | operation.as_strategy(
            generation_mode=GenerationMode.NEGATIVE
        )

        @given(case=cases)
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def check(case: Any) -> None:
            nonlocal calls
            calls += 1
            response = case.call(headers=auth)
            where = f"{case.method} {case.formatted_path}"
            if response.status_code >= 500:
                failures.append(f"{where}: {response.status_code} {response.text[:300]}")
            elif 400 <= response.status_code < 500 and "json" in response.headers.get("Content-Type", ""):
                body = response.json()
                if not (isinstance(body, dict) and {"error", "code", "details"} <= body.keys()):
                    failures.append(f"{where}: {response.status_code} without the error shape: {str(body)[:300]}")

        check()
    assert operations >= 15 and calls >= operations * EXAMPLES // 2
    assert failures == []
