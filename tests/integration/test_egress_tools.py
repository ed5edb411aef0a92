"""Tenant-driven requests against real loopback servers: the agent's ``http_request`` tool reaches
a loopback server only when the operator allows it (``egress_allow``), redirect hops are checked
again, and a JSON-schema expectation never fetches a remote ``$ref`` (the server counts requests).

Every server here listens on loopback; names that would resolve elsewhere go through a stub
resolver, so nothing leaves the machine."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.spec import Expectation
from workers.execution.assessment import AssessmentContext, check, score_expectations
from workers.execution.providers.base import ToolCall
from workers.execution.providers.tools import ToolBox

SECRET = "the-secret-body-of-an-internal-service"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        status, headers, body = self.server.routes.get(  # type: ignore[attr-defined]
            self.path, (200, {"Content-Type": "text/plain"}, SECRET)
        )
        data = body.encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


class V6Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


Start = Callable[..., Any]


@pytest.fixture
def server() -> Iterator[Start]:
    started: list[http.server.ThreadingHTTPServer] = []

    def start(host: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
        cls = V6Server if ":" in host else http.server.ThreadingHTTPServer
        httpd = cls((host, 0), Handler)
        httpd.hits, httpd.routes = [], {}  # type: ignore[attr-defined]
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
        return httpd

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


def fetch(toolbox: ToolBox, url: str) -> tuple[str, bool]:
    call = ToolCall.from_raw("c1", "http_request", json.dumps({"url": url}))
    result = toolbox.run(call, threading.Event())
    return result.content, result.is_error


def tools(tmp_path: Path, hosts: tuple[str, ...], **kwargs: Any) -> ToolBox:
    return ToolBox(("http_request",), tmp_path, hosts, **kwargs)


def test_a_loopback_server_is_refused_unless_the_operator_allows_it(tmp_path: Path, server: Start) -> None:
    httpd = server()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/admin"
    content, error = fetch(tools(tmp_path, ("127.0.0.1",)), url)
    assert error and content == "refused: 127.0.0.1 is a loopback address"
    assert httpd.hits == [] and SECRET not in content

    content, error = fetch(tools(tmp_path, ("127.0.0.1",), egress_allow=("127.0.0.1",)), url)
    assert not error and json.loads(content) == {"status": 200, "contentType": "text/plain", "body": SECRET}
    assert httpd.hits == ["/admin"]


@pytest.mark.parametrize("entry", ["127.0.0.1:{port}", "127.0.0.0/8", "127.0.0.1/32"])
def test_the_operator_may_allow_a_port_or_a_block(tmp_path: Path, server: Start, entry: str) -> None:
    httpd = server()
    port = httpd.server_address[1]
    toolbox = tools(tmp_path, ("127.0.0.1",), egress_allow=(entry.format(port=port),))
    content, error = fetch(toolbox, f"http://127.0.0.1:{port}/ok")
    assert not error and json.loads(content)["status"] == 200


def test_a_port_entry_allows_only_that_port(tmp_path: Path, server: Start) -> None:
    allowed, other = server(), server()
    toolbox = tools(tmp_path, ("127.0.0.1",), egress_allow=(f"127.0.0.1:{allowed.server_address[1]}",))
    content, error = fetch(toolbox, f"http://127.0.0.1:{other.server_address[1]}/")
    assert error and content == "refused: 127.0.0.1 is a loopback address" and other.hits == []


def test_a_redirect_to_a_private_address_is_refused_and_its_body_never_shown(tmp_path: Path, server: Start) -> None:
    httpd = server()
    port = httpd.server_address[1]
    httpd.routes["/go"] = (302, {"Location": "http://internal.example/secret"}, f"moved: {SECRET}")

    def resolve(host: str, p: int, family: int = 0, type: int = 0) -> list[tuple[Any, ...]]:
        assert host == "internal.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", p))]

    toolbox = tools(tmp_path, ("127.0.0.1", "internal.example"), egress_allow=(f"127.0.0.1:{port}",), resolve=resolve)
    content, error = fetch(toolbox, f"http://127.0.0.1:{port}/go")
    assert error and content == "refused: internal.example resolves to a private address (10.0.0.5)"
    assert httpd.hits == ["/go"] and SECRET not in content


def test_a_redirect_to_a_loopback_port_the_operator_did_not_allow_is_never_sent(tmp_path: Path, server: Start) -> None:
    front, back = server(), server()
    port, other = front.server_address[1], back.server_address[1]
    front.routes["/go"] = (307, {"Location": f"http://127.0.0.1:{other}/admin"}, "")
    toolbox = tools(tmp_path, ("127.0.0.1",), egress_allow=(f"127.0.0.1:{port}",))
    content, error = fetch(toolbox, f"http://127.0.0.1:{port}/go")
    assert error and content == "refused: 127.0.0.1 is a loopback address"
    assert front.hits == ["/go"] and back.hits == []


def test_a_redirect_is_followed_when_every_hop_is_allowed(tmp_path: Path, server: Start) -> None:
    front, back = server(), server()
    front.routes["/go"] = (302, {"Location": f"http://127.0.0.1:{back.server_address[1]}/there"}, "")
    toolbox = tools(tmp_path, ("127.0.0.1",), egress_allow=("127.0.0.1",))
    content, error = fetch(toolbox, f"http://127.0.0.1:{front.server_address[1]}/go")
    assert not error and json.loads(content)["body"] == SECRET and back.hits == ["/there"]


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_bracketed_ipv6_allowed_hosts_reach_an_ipv6_loopback_server(tmp_path: Path, server: Start) -> None:
    httpd = server("::1")
    port = httpd.server_address[1]
    url = f"http://[::1]:{port}/v6"
    content, error = fetch(tools(tmp_path, (f"[::1]:{port}",)), url)
    assert error and content == "refused: ::1 is a loopback address" and httpd.hits == []
    content, error = fetch(tools(tmp_path, (f"[::1]:{port}",), egress_allow=("[::1]",)), url)
    assert not error and json.loads(content)["body"] == SECRET and httpd.hits == ["/v6"]
    content, error = fetch(tools(tmp_path, ("[::1]:1",), egress_allow=("::1",)), url)
    assert error and "is not in this agent's allowedHosts" in content


# -- JSON-schema $ref -------------------------------------------------------------------------


def schema_check(schema: dict[str, Any], output: str) -> tuple[float, str]:
    return check(Expectation.from_document({"type": "json_schema", "schema": schema}), output, AssessmentContext())


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "http://127.0.0.1:{port}/schema.json"},
        {"properties": {"name": {"$ref": "http://127.0.0.1:{port}/schema.json#/$defs/name"}}},
        {"$id": "http://127.0.0.1:{port}/root.json", "properties": {"name": {"$ref": "schema.json"}}},
        {"$schema": "https://json-schema.org/draft/2019-09/schema", "$ref": "http://127.0.0.1:{port}/schema.json"},
        {"$schema": "http://json-schema.org/draft-07/schema#", "allOf": [{"$ref": "http://127.0.0.1:{port}/s.json"}]},
    ],
)
def test_a_remote_ref_is_never_fetched(server: Start, schema: dict[str, Any]) -> None:
    httpd = server()
    port = httpd.server_address[1]
    httpd.routes["/schema.json"] = (200, {"Content-Type": "application/json"}, '{"type": "string"}')
    document = json.loads(json.dumps(schema).replace("{port}", str(port)))
    score, reason = schema_check(document, '{"name": "x"}')
    assert score == 1.0 and reason.startswith("$ref to a remote document is not allowed: http://127.0.0.1:")
    assert httpd.hits == []


@pytest.mark.parametrize("ref", ["file:///etc/passwd", "other.json", "urn:example:thing"])
def test_refs_to_files_and_other_documents_fail_the_check_too(ref: str) -> None:
    score, reason = schema_check({"$ref": ref}, "{}")
    assert (score, reason) == (1.0, f"$ref to a remote document is not allowed: {ref}")


def test_local_refs_keep_working() -> None:
    schema = {
        "$defs": {"name": {"type": "string", "pattern": "^[a-z]+$"}},
        "type": "object",
        "properties": {"name": {"$ref": "#/$defs/name"}, "tags": {"items": {"$ref": "#/$defs/name"}}},
        "required": ["name"],
    }
    assert schema_check(schema, '{"name": "ada", "tags": ["x"]}') == (5.0, "output matches the JSON schema")
    score, reason = schema_check(schema, '{"name": "Ada"}')
    assert score == 1.0 and reason == "output does not match the schema at name: 'Ada' does not match '^[a-z]+$'"
    draft7 = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": {"n": {"type": "integer"}},
        "items": {"$ref": "#/definitions/n"},
    }
    assert schema_check(draft7, "[1, 2]")[0] == 5.0 and schema_check(draft7, '[1, "2"]')[0] == 1.0
    with_id = {"$id": "https://example.com/s.json", "$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n"}
    assert schema_check(with_id, "3")[0] == 5.0


def test_a_ref_that_points_nowhere_inside_the_schema_fails_with_its_reason() -> None:
    score, reason = schema_check({"$ref": "#/$defs/missing"}, "{}")
    assert score == 1.0 and reason.startswith("the expectation's schema has a $ref that cannot be resolved")


def test_a_remote_ref_fails_only_its_check_among_the_expectations(server: Start) -> None:
    httpd = server()
    expectations = [
        Expectation.from_document({"type": "contains", "value": "name"}),
        Expectation.from_document(
            {"type": "json_schema", "schema": {"$ref": f"http://127.0.0.1:{httpd.server_address[1]}/schema.json"}}
        ),
    ]
    verdict = score_expectations(expectations, '{"name": "x"}', None, AssessmentContext())
    assert verdict.score == 3.0 and [r["score"] for r in verdict.criteria] == [5.0, 1.0]
    assert httpd.hits == []
