"""The OpenAPI document covers every route the app serves, validates, and is served with its HTML
reference without an API key."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

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
    validate(spec)
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
    assert list_params == {"status", "limit", "offset"}


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
