"""The OpenAPI document covers every route the app serves, validates, and is served with its HTML
reference without an API key."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from marshmallow import Schema, validate
from marshmallow import fields as ma_fields
from openapi_spec_validator import validate as validate_spec

from api.http import errors, schemas
from api.http.openapi import DOCS, UndocumentedRoute, build_spec, openapi_path


def served_operations(app: Flask) -> set[tuple[str, str]]:
    return {
        (openapi_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }


def test_every_route_of_the_app_is_documented(app: Flask) -> None:
    spec = build_spec(app, strict=True)  # raises on a route without documentation
    documented = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert documented == served_operations(app)
    for path in (
        "/v1/missions",
        "/v1/missions/{missionId}/events",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/openapi.json",
        "/docs",
    ):
        assert path in spec["paths"]


def test_a_route_missing_from_the_docs_is_refused_in_strict_mode(app: Flask) -> None:
    app.add_url_rule("/v1/secret", "secret", lambda: "")
    with pytest.raises(UndocumentedRoute, match="/v1/secret"):
        build_spec(app, strict=True)
    assert build_spec(app)["paths"]["/v1/secret"]["get"]["x-undocumented"] is True


def test_the_spec_is_a_valid_openapi_3_1_document(app: Flask) -> None:
    spec = build_spec(app, strict=True)
    validate_spec(spec)
    assert spec["openapi"].startswith("3.1")


def test_no_documentation_entry_is_left_without_a_route(app: Flask) -> None:
    endpoints = {(rule.endpoint, method) for rule in app.url_map.iter_rules() for method in rule.methods or set()}
    assert set(DOCS) <= endpoints


def test_request_bodies_are_the_schemas_the_routes_load_with(app: Flask) -> None:
    spec = build_spec(app, strict=True)
    mission = spec["components"]["schemas"]["Mission"]
    assert mission["required"] == ["name", "tasks"] and mission["additionalProperties"] is False
    assert mission["properties"]["tasks"]["items"] == {"$ref": "#/components/schemas/Task"}
    assert "required" not in spec["components"]["schemas"]["MissionPatch"]
    create = spec["paths"]["/v1/missions"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Mission"}
    assert create["security"] == [{"bearer": []}]
    assert spec["paths"]["/healthz"]["get"]["security"] == []
    list_params = {p["name"] for p in spec["paths"]["/v1/missions"]["get"]["parameters"]}
    assert list_params == {"status", "q", "include", "limit", "offset", "after"}
    for path in ("/v1/missions", "/v1/missions/{missionId}/runs", "/v1/missions/{missionId}/fires"):
        assert {"X-Next-Cursor", "Link"} <= set(spec["paths"][path]["get"]["responses"]["200"]["headers"])
    for path, item in (
        ("/v1/missions/{missionId}/runs/{runId}/tasks/{taskId}/attempts", "Attempt"),
        ("/v1/webhooks/{webhookId}/deliveries", "Delivery"),
    ):
        operation = spec["paths"][path]["get"]
        ok = operation["responses"]["200"]
        assert {"X-Next-Cursor", "Link"} <= set(ok["headers"])
        assert ok["content"]["application/json"]["schema"] == {
            "type": "array",
            "items": {"$ref": f"#/components/schemas/{item}"},
        }
        assert {p["name"] for p in operation["parameters"] if p["in"] == "query"} == {"limit", "after"}
    assert not {"AttemptPage", "DeliveryPage"} & set(spec["components"]["schemas"])


def test_the_spec_and_the_docs_page_are_served_without_a_key(client: FlaskClient) -> None:
    answer = client.get("/v1/openapi.json")
    assert answer.status_code == 200
    spec = answer.get_json()
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    for path, item in spec["paths"].items():
        for method in item:
            assert re.search(rf">{method.upper()}</span> <code>{re.escape(path)}</code>", text), (method, path)
    assert "<script src" not in text and "https://" not in text  # self-contained: nothing from a CDN


def test_the_documented_example_mission_is_accepted(client: FlaskClient, auth: dict[str, str]) -> None:
    spec = client.get("/v1/openapi.json").get_json()
    example = spec["paths"]["/v1/missions"]["post"]["requestBody"]["content"]["application/json"]["example"]
    answer = client.post("/v1/missions", json=example, headers=auth)
    assert answer.status_code == 201, answer.get_json()


# -- The document says what the server does ---------------------------------------------------------


def component_schemas(app: Flask) -> dict[str, Any]:
    return build_spec(app, strict=True)["components"]["schemas"]  # type: ignore[no-any-return]


def marshmallow_fields(schema: Schema) -> list[tuple[str, str, Any]]:
    """(schema class, field name, field) of every field of ``schema`` and the schemas nested in it."""
    out, todo, seen = [], [schema], set()
    while todo:
        current = todo.pop()
        if type(current) in seen:
            continue
        seen.add(type(current))
        for name, field in current.fields.items():
            out.append((type(current).__name__, field.data_key or name, field))
            inner = getattr(field, "inner", None) or field
            if isinstance(inner, ma_fields.Nested):
                todo.append(inner.schema)
    return out


def test_a_range_that_leaves_out_its_end_is_an_exclusive_bound_in_the_document(app: Flask) -> None:
    spec = component_schemas(app)
    checked = 0
    for class_name, name, field in marshmallow_fields(schemas.MISSION):
        component = class_name.removesuffix("Schema")
        for validator in field.validators:
            if not isinstance(validator, validate.Range):
                continue
            prop = spec[component]["properties"][name]
            if validator.min is not None:
                key = "minimum" if validator.min_inclusive else "exclusiveMinimum"
                other = "exclusiveMinimum" if validator.min_inclusive else "minimum"
                assert prop.get(key) == validator.min and other not in prop, (component, name, prop)
                checked += 1
            if validator.max is not None:
                key = "maximum" if validator.max_inclusive else "exclusiveMaximum"
                assert prop.get(key) == validator.max, (component, name, prop)
    assert checked >= 8
    assert spec["Expectation"]["properties"]["timeout"]["exclusiveMinimum"] == 0
    assert spec["Task"]["properties"]["timeout"]["exclusiveMinimum"] == 0
    assert spec["Mission"]["properties"]["deadlineAfter"]["exclusiveMinimum"] == 0


def probe_mission(name: str) -> dict[str, Any]:
    """A valid mission holding one of every component that has numbers."""
    return {
        "name": name,
        "tasks": [
            {
                "title": "A",
                "description": "a",
                "assignTo": "w",
                "maxRetries": 100,
                "retryPolicy": {},
                "expectations": [{"criterion": "good"}],
            },
            {"title": "B", "description": "b", "assignTo": "w", "dependsOn": ["A"]},
        ],
        # Volatile: each probe gives the agent other numbers, which a kept agent "w" would refuse (409).
        "team": {
            "volatile": True,
            "agents": [{"name": "w", "model": "scripted/x", "script": [{"output": "o", "score": 4}]}],
        },
        "qualityGates": [{"afterTasks": ["A"], "blocksTasks": ["B"]}],
        "budget": {},
    }


# Where each component sits in probe_mission: (the object holding its fields, the error path prefix).
HOSTS: dict[str, tuple[Any, str]] = {
    "Mission": (lambda m: m, ""),
    "Budget": (lambda m: m["budget"], "budget."),
    "Task": (lambda m: m["tasks"][0], "tasks[0]."),
    "RetryPolicy": (lambda m: m["tasks"][0]["retryPolicy"], "tasks[0].retryPolicy."),
    "Expectation": (lambda m: m["tasks"][0]["expectations"][0], "tasks[0].expectations[0]."),
    "Agent": (lambda m: m["team"]["agents"][0], "team.agents[0]."),
    "ScriptStep": (lambda m: m["team"]["agents"][0]["script"][0], "team.agents[0].script[0]."),
    "Gate": (lambda m: m["qualityGates"][0], "qualityGates[0]."),
}


def test_every_documented_bound_of_a_number_is_the_one_the_server_enforces(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    spec = component_schemas(app)
    names = iter(range(1_000_000))
    probed = []
    for component, (host, prefix) in HOSTS.items():
        for name, prop in spec[component]["properties"].items():
            kinds = set(prop.get("type", []))
            if not kinds & {"number", "integer"}:
                continue
            step = 1 if "integer" in kinds else 0.5
            probes: list[tuple[float, bool]] = []  # (value, accepted)
            if "minimum" in prop:
                probes += [(prop["minimum"], True), (prop["minimum"] - step, False)]
            if "exclusiveMinimum" in prop:
                probes += [(prop["exclusiveMinimum"], False), (prop["exclusiveMinimum"] + step, True)]
            if "maximum" in prop:
                probes += [(prop["maximum"], True), (prop["maximum"] + step, False)]
            if "exclusiveMaximum" in prop:
                probes += [(prop["exclusiveMaximum"], False), (prop["exclusiveMaximum"] - step, True)]
            if not probes:  # no bound documented: none enforced either, however large
                probes = [(10**15, True), (-(10**15), True)] if "integer" in kinds else [(1e300, True), (-1e300, True)]
            for value, accepted in probes:
                body = probe_mission(f"bounds-{next(names)}")
                host(body)[name] = value
                answer = client.post("/v1/missions", json=body, headers=auth)
                probed.append(f"{prefix}{name}={value}")
                if accepted:
                    assert answer.status_code == 201, (prefix + name, value, answer.get_json())
                else:
                    assert answer.status_code == 400, (prefix + name, value, answer.get_json())
                    assert prefix + name in answer.get_json()["details"]["fields"], answer.get_json()
    assert len(probed) >= 40


def test_the_patch_body_documents_no_tasks_and_the_server_refuses_them(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    spec = component_schemas(app)
    assert "tasks" not in spec["MissionPatch"]["properties"]
    assert set(spec["MissionPatch"]["properties"]) == set(spec["Mission"]["properties"]) - {"tasks"}
    mission = client.post("/v1/missions", json=probe_mission("patched"), headers=auth).get_json()
    answer = client.patch(f"/v1/missions/{mission['id']}", json={"tasks": []}, headers=auth)
    assert answer.status_code == 400 and "tasks" in answer.get_json()["details"]["fields"]


HELLO = {
    "name": "streamed",
    "tasks": [{"title": "Greet", "description": "Write a greeting.", "assignTo": "writer"}],
    "team": {"agents": [{"name": "writer", "model": "scripted/demo", "script": [{"output": "hi"}]}]},
}


def test_the_event_streams_are_served_as_documented(app: Flask, client: FlaskClient, auth: dict[str, str]) -> None:
    spec = build_spec(app, strict=True)
    execute = spec["paths"]["/v1/missions/{missionId}/execute"]["post"]
    events = spec["paths"]["/v1/missions/{missionId}/events"]["get"]
    assert list(execute["responses"]["200"]["content"]) == ["text/event-stream"]
    assert list(execute["responses"]["202"]["content"]) == ["application/json"]
    assert list(events["responses"]["200"]["content"]) == ["text/event-stream", "application/json"]
    assert events["responses"]["200"]["content"]["application/json"]["schema"]["items"] == {
        "$ref": "#/components/schemas/Event"
    }
    header = next(p for p in events["parameters"] if p["name"] == "Last-Event-ID")
    assert header["in"] == "header"
    query = next(p for p in events["parameters"] if p["name"] == "lastEventId")
    assert query["schema"]["minimum"] == 0 and query["schema"]["maximum"] == 2**63 - 1

    mission = client.post("/v1/missions", json=HELLO, headers=auth).get_json()
    streamed = client.post(
        f"/v1/missions/{mission['id']}/execute", headers={**auth, "Accept": "text/event-stream"}, buffered=False
    )
    assert streamed.status_code == 200 and streamed.mimetype == "text/event-stream"
    streamed.close()  # (it would end only with the run: aborted below)
    abort = client.post(f"/v1/missions/{mission['id']}/abort", headers=auth)
    assert abort.status_code == 200

    pattern = re.compile(header["schema"]["pattern"])
    for value in ("", "0", "12", "9223372036854775807", "x", "-1", "1.5", "99999999999999999999"):
        answer = client.get(
            f"/v1/missions/{mission['id']}/events", headers={**auth, "Last-Event-ID": value}, buffered=False
        )
        documented_ok = bool(pattern.fullmatch(value)) and (not value or int(value) <= 2**63 - 1)
        if documented_ok:
            assert answer.status_code in (200, 204), (value, answer.status_code)
            assert answer.status_code == 204 or answer.mimetype == "text/event-stream"
        else:
            assert answer.status_code == 400, (value, answer.status_code)
            assert "Last-Event-ID" in answer.get_json()["details"]["fields"]
        answer.close()


def test_every_error_code_the_server_answers_is_documented(app: Flask) -> None:
    spec = component_schemas(app)
    documented = set(spec["Error"]["properties"]["code"]["enum"])
    assert set(errors._CODES.values()) | {"internal_error", "unavailable"} <= documented
    responses = build_spec(app, strict=True)["components"]["responses"]
    assert responses["E503"]["headers"]["Retry-After"]["schema"] == {"type": "integer"}


def test_every_operation_with_parameters_documents_a_400_and_every_keyed_one_a_503(app: Flask) -> None:
    spec = build_spec(app, strict=True)
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            statuses = set(operation["responses"])
            if operation.get("parameters"):
                assert "400" in statuses, (method, path)
            if operation["security"]:
                assert {"401", "503"} <= statuses, (method, path)


def test_no_static_route_is_served(app: Flask) -> None:
    assert not [rule.rule for rule in app.url_map.iter_rules() if rule.endpoint == "static"]
