"""Agent tools stay inside their fences: files inside the run's workspace, HTTP only to allowed
hosts, shell only when the operator allows commands; problems come back to the model as tool
errors. Missions asking for unknown or disabled tools are rejected at create."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.spec import MissionSpec
from orchestrator.validation import validate_mission
from workers.execution.assessment import missing_outcomes
from workers.execution.providers.base import Cancelled, ToolCall
from workers.execution.providers.tools import (
    ToolBox,
    host_allowed,
    inside,
    requested_tools,
    run_command,
    truncate,
)


def box(tmp_path: Path, *names: str, hosts: tuple[str, ...] = (), commands: bool = False) -> ToolBox:
    return ToolBox(names or ("read_file", "write_file"), tmp_path, hosts, commands, command_timeout=5)


def use(toolbox: ToolBox, name: str, arguments: str) -> tuple[str, bool]:
    result = toolbox.run(ToolCall.from_raw("c1", name, arguments), threading.Event())
    return result.content, result.is_error


def test_written_files_land_in_the_workspace_and_are_recorded_as_outcomes(tmp_path: Path) -> None:
    toolbox = box(tmp_path)
    content, error = use(toolbox, "write_file", '{"path": "reports/summary.md", "content": "# Done"}')
    assert not error and content == "wrote 6 characters to reports/summary.md"
    assert (tmp_path / "reports" / "summary.md").read_text() == "# Done"
    assert use(toolbox, "read_file", '{"path": "reports/summary.md"}') == ("# Done", False)
    assert toolbox.outcomes() == ({"type": "file", "path": "reports/summary.md", "characters": 6},)


@pytest.mark.parametrize("path", ["../escape.txt", "/etc/passwd", "a/../../escape.txt", "link/secret", ""])
def test_a_path_outside_the_workspace_is_refused(tmp_path: Path, path: str) -> None:
    outside = tmp_path.parent / f"outside-{os.getpid()}"
    outside.mkdir(exist_ok=True)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "link").symlink_to(outside, target_is_directory=True)
    toolbox = box(workspace)
    content, error = use(toolbox, "write_file", f'{{"path": "{path}", "content": "x"}}')
    assert error and ("outside the workspace" in content or "absolute" in content or "non-empty" in content)
    assert not (outside / "secret").exists() and toolbox.outcomes() == ()
    with pytest.raises(ValueError):
        inside(workspace, path)


def test_reading_a_missing_file_or_sending_broken_arguments_is_a_tool_error(tmp_path: Path) -> None:
    toolbox = box(tmp_path)
    assert use(toolbox, "read_file", '{"path": "nope.txt"}') == ("no file 'nope.txt' in the workspace", True)
    content, error = use(toolbox, "write_file", '{"path": "a.txt", "content": ')
    assert error and "not a JSON object" in content
    content, error = use(toolbox, "shell", '{"command": "true"}')
    assert error and "unknown tool 'shell'" in content


@pytest.mark.parametrize(
    ("url", "allowed", "ok"),
    [
        ("https://api.example.com/x", ["api.example.com"], True),
        ("https://API.Example.com./x", ["api.example.com"], True),
        ("https://evil.com/x", ["api.example.com"], False),
        ("https://api.example.com.evil.com/x", ["api.example.com"], False),
        ("https://docs.example.com/", ["*.example.com"], True),
        ("https://example.com/", ["*.example.com"], False),
        ("http://127.0.0.1:8080/a", ["127.0.0.1:8080"], True),
        ("http://127.0.0.1:9090/a", ["127.0.0.1:8080"], False),
        ("http://127.0.0.1:9090/a", ["127.0.0.1"], True),
        ("http://user@evil.com@api.example.com/", ["api.example.com"], True),
        ("file:///etc/passwd", ["api.example.com"], False),
        ("https://api.example.com/x", [], False),
    ],
)
def test_hosts_are_matched_exactly_by_wildcard_or_with_a_port(url: str, allowed: list[str], ok: bool) -> None:
    assert host_allowed(url, allowed) is ok


def test_http_requests_to_hosts_outside_the_allow_list_are_refused_before_sending(tmp_path: Path) -> None:
    toolbox = box(tmp_path, "http_request", hosts=("api.example.com",))
    content, error = use(toolbox, "http_request", '{"url": "http://127.0.0.1:1/secret"}')
    assert error and "'127.0.0.1:1' is not in this agent's allowedHosts (api.example.com)" in content
    content, error = use(box(tmp_path, "http_request"), "http_request", '{"url": "https://api.example.com/"}')
    assert error and "allowedHosts list is empty" in content
    content, error = use(toolbox, "http_request", '{"url": "ftp://api.example.com/"}')
    assert error and "not an absolute http(s) URL" in content


def test_the_shell_tool_needs_commands_enabled(tmp_path: Path) -> None:
    content, error = use(box(tmp_path, "shell"), "shell", '{"command": "echo hi"}')
    assert error and "MISSIONS_ALLOW_COMMANDS" in content
    content, error = use(
        box(tmp_path, "shell", commands=True), "shell", '{"command": "echo hi > f.txt; cat f.txt; exit 3"}'
    )
    assert not error and content == "exit status 3\nhi\n"


def test_the_shell_sees_no_keys_of_the_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    code, output, _ = run_command('echo "[$OPENAI_API_KEY]" "$HOME"', tmp_path, 5)
    assert code == 0 and output.strip() == f"[] {tmp_path}"


def test_a_command_is_killed_at_its_time_limit(tmp_path: Path) -> None:
    started = time.monotonic()
    _, output, timed_out = run_command("echo started; sleep 30", tmp_path, 0.5)
    assert timed_out and "started" in output and time.monotonic() - started < 3


def test_a_cancel_stops_a_running_command_at_once(tmp_path: Path) -> None:
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        run_command("sleep 30", tmp_path, 60, cancel)
    assert time.monotonic() - started < 1.5


def test_long_text_keeps_its_head_and_tail_with_a_note() -> None:
    text = "a" * 100 + "b" * 100
    cut = truncate(text, 40)
    assert cut.startswith("a" * 30) and cut.endswith("b" * 10) and "160 characters cut" in cut
    assert truncate("short", 40) == "short"


def test_tools_may_be_named_or_given_as_objects_and_unknown_ones_are_ignored_at_run_time() -> None:
    assert requested_tools({"tools": ["read_file", {"name": "http_request"}, "teleport", "read_file"]}) == (
        "read_file",
        "http_request",
    )
    assert requested_tools({}) == ()


def _mission(tools: list[object]) -> MissionSpec:
    return MissionSpec.from_document(
        {
            "name": "m",
            "tasks": [{"title": "t", "description": "d", "assignTo": "a"}],
            "team": {"name": "crew", "agents": [{"name": "a", "model": "openai/gpt-4o", "tools": tools}]},
        }
    )


def test_a_mission_asking_for_the_shell_is_rejected_unless_commands_are_allowed() -> None:
    problems = validate_mission(_mission(["read_file", "shell"]))
    assert [(p.field, p.message) for p in problems] == [
        (
            "team.agents[0].tools[1]",
            "the shell tool is disabled on this server (MISSIONS_ALLOW_COMMANDS=true enables it)",
        )
    ]
    assert validate_mission(_mission(["shell"]), allow_commands=True) == []


def test_a_mission_asking_for_an_unknown_tool_is_rejected_with_the_known_ones_named() -> None:
    problems = validate_mission(_mission(["read_file", "browser", {"name": "rm_rf"}, 7]))
    assert [p.field for p in problems] == [
        "team.agents[0].tools[1]",
        "team.agents[0].tools[2]",
        "team.agents[0].tools[3]",
    ]
    assert 'unknown tool "browser"; use one of http_request, read_file, write_file, shell' in problems[0].message


def test_an_assessor_with_an_unknown_provider_is_rejected() -> None:
    spec = MissionSpec.from_document(
        {
            "name": "m",
            "tasks": [{"title": "t", "description": "d", "assignTo": "a"}],
            "team": {"name": "crew", "agents": [{"name": "a", "model": "openai/gpt-4o"}]},
            "assessor": {"model": "gemini/pro"},
        }
    )
    assert [p.field for p in validate_mission(spec)] == ["assessor.model"]


def test_required_outcomes_must_have_been_produced(tmp_path: Path) -> None:
    (tmp_path / "report.md").write_text("# Report")
    (tmp_path / "data.json").write_text("{not json")
    expected = [
        {"name": "report", "type": "file", "path": "report.md", "required": True},
        {"name": "notes.md", "type": "file", "required": True},
        {"name": "data", "type": "json", "path": "data.json", "required": True},
        {"name": "link", "type": "url", "required": True},
        {"name": "optional", "type": "file", "path": "never.md"},
    ]
    assert missing_outcomes(expected, "see the report", tmp_path) == [
        "required outcome 'notes.md' was not produced: no file 'notes.md' in the workspace",
        "required outcome 'data': 'data.json' is not valid JSON",
        "required outcome 'link' was not produced: the output holds no URL",
    ]
    assert missing_outcomes([{"name": "summary", "required": True}], "", tmp_path) == [
        "required outcome 'summary' was not produced: the output is empty"
    ]
    assert missing_outcomes([{"name": "x", "path": "../x", "required": True}], "", tmp_path) == [
        "required outcome 'x': '../x' is outside the workspace folder"
    ]


@pytest.mark.parametrize(
    ("url", "allowed", "ok"),
    [
        ("http://[::1]:8080/a", ["[::1]:8080"], True),
        ("http://[::1]:9090/a", ["[::1]:8080"], False),
        ("http://[::1]/a", ["[::1]"], True),
        ("http://[::1]:9090/a", ["[::1]"], True),
        ("https://[2001:db8::1]/", ["[2001:db8::1]"], True),
        ("https://[2001:db8::1]/", ["[2001:DB8:0:0::1]"], True),
        ("https://[2001:db8::1]/", ["2001:db8::1"], True),
        ("https://[2001:db8::2]/", ["[2001:db8::1]"], False),
        ("https://[2001:db8::1]:8443/", ["[2001:db8::1]:443"], False),
        ("https://[2001:db8::1]/", ["[2001:db8::1]:443"], True),
        ("http://127.0.0.1:8080/", ["[::1]:8080"], False),
        ("http://[::1]:8080/", ["[::1"], False),
    ],
)
def test_bracketed_ipv6_entries_match_ipv6_hosts(url: str, allowed: list[str], ok: bool) -> None:
    assert host_allowed(url, allowed) is ok


def _resolves_to(address: str) -> Callable[..., list[tuple[Any, ...]]]:
    def resolve(host: str, port: int, family: int = 0, type: int = 0) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    return resolve


def test_http_requests_to_a_host_resolving_to_a_private_address_are_refused(tmp_path: Path) -> None:
    toolbox = ToolBox(("http_request",), tmp_path, ("api.internal",), resolve=_resolves_to("10.1.2.3"))
    content, error = use(toolbox, "http_request", '{"url": "http://api.internal/secret"}')
    assert error and content == "refused: api.internal resolves to a private address (10.1.2.3)"
    hosts = ("*.internal", "169.254.169.254")
    for url in ("http://169.254.169.254/latest/meta-data/", "http://metadata.google.internal/"):
        toolbox = ToolBox(("http_request",), tmp_path, hosts, resolve=_resolves_to("8.8.8.8"))
        content, error = use(toolbox, "http_request", f'{{"url": "{url}"}}')
        assert error and content.startswith("refused: ") and "metadata" in content


def test_a_host_that_does_not_resolve_is_a_short_tool_error(tmp_path: Path) -> None:
    def nowhere(host: str, port: int, family: int = 0, type: int = 0) -> list[tuple[Any, ...]]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    toolbox = ToolBox(("http_request",), tmp_path, ("api.nowhere",), resolve=nowhere)
    content, error = use(toolbox, "http_request", '{"url": "https://api.nowhere/"}')
    assert error and content == "request failed: api.nowhere does not resolve (Name or service not known)"
