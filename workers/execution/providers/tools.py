"""The tools an agent may call, each opt-in through the agent's ``tools`` list.

- ``http_request``: method, URL, headers, body; only to hosts in the agent's ``allowedHosts``
  (``example.com``, ``*.example.com``, ``host:port``, ``[v6]`` or ``[v6]:port``), redirects
  included. No list, no requests. Every request and redirect hop then passes the egress guard
  (``workers/execution/egress.py``): a host that resolves to a loopback, private, link-local or
  metadata address is refused unless the operator allows it (``MISSIONS_EGRESS_ALLOW``, the
  ToolBox's ``egress_allow``), and the connection goes to the address that was checked. A refused
  request is a short tool error (``refused: <why>``), never a body.
- ``read_file`` / ``write_file``: paths relative to the run's workspace folder; a path that
  resolves outside it (``..``, absolute, through a symlink) is refused. Files written are the
  attempt's outcomes.
- ``shell``: only when the operator set ``MISSIONS_ALLOW_COMMANDS=true`` (a mission asking for it
  otherwise is rejected at create); ``/bin/sh -c`` in the workspace with a time limit, a minimal
  environment (no provider keys or database URLs) and truncated output.

A tool never raises into the agent loop: a problem is a tool result with ``is_error`` set, which
the model sees and can react to. A cancel stops a running request or command within a poll.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from orchestrator.validation import AGENT_TOOLS
from workers.execution import egress
from workers.execution.providers.base import (
    CANCEL_POLL,
    Cancelled,
    ToolCall,
    ToolResult,
    ToolSpec,
    abandonable,
)

READ_LIMIT = 100_000  # characters of a file returned to the model
WRITE_LIMIT = 5_000_000  # characters one write_file may store
HTTP_BODY_LIMIT = 50_000  # characters of a response body returned to the model
SHELL_OUTPUT_LIMIT = 20_000  # characters of command output returned to the model
HTTP_TIMEOUT = 30.0
MAX_REDIRECTS = egress.MAX_REDIRECTS
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")

SPECS: Mapping[str, ToolSpec] = {
    "http_request": ToolSpec(
        "http_request",
        "Make an HTTP request and get the status, content type and body (truncated). Only some hosts are allowed.",
        {
            "type": "object",
            "properties": {
                "method": {"type": "string", "enum": list(HTTP_METHODS), "description": "default GET"},
                "url": {"type": "string", "description": "absolute http(s) URL"},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "body": {"type": "string", "description": "request body, sent as is"},
            },
            "required": ["url"],
        },
    ),
    "read_file": ToolSpec(
        "read_file",
        "Read a text file from the shared workspace folder of this run (path relative to it).",
        {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    ),
    "write_file": ToolSpec(
        "write_file",
        "Write a text file in the shared workspace folder of this run (path relative to it; folders are "
        "created; an existing file is replaced).",
        {
            "type": "object",
            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["path", "content"],
        },
    ),
    "shell": ToolSpec(
        "shell",
        "Run a shell command (/bin/sh -c) in the workspace folder; returns the exit status and output (truncated).",
        {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
    ),
}
assert set(SPECS) == set(AGENT_TOOLS)


def requested_tools(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The tool names an agent document asks for (strings, or objects with a ``name``)."""
    names: list[str] = []
    for entry in config.get("tools") or ():
        name = entry.get("name") if isinstance(entry, Mapping) else entry
        if isinstance(name, str) and name in SPECS and name not in names:
            names.append(name)
    return tuple(names)


def host_allowed(url: str, allowed: Sequence[str]) -> bool:
    """Whether ``url``'s host is in ``allowed``: exact host, ``*.domain``, ``host:port``, an IPv6
    address bracketed (``[::1]``, ``[::1]:8080``) or bare (``::1``, no port then)."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    host = egress.normal_host(parts.hostname or "")
    if not host:
        return False
    for entry in allowed:
        pattern = entry.strip().lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and host != pattern[2:]:
                return True
            continue
        parsed = egress.split_entry(pattern)
        if parsed is not None and parsed[0] == host and parsed[1] in (None, port):
            return True
    return False


def inside(workspace: Path, path: str) -> Path:
    """``path`` resolved inside ``workspace``; ValueError if it would leave it."""
    if not isinstance(path, str) or not path.strip():
        raise ValueError("path must be a non-empty string")
    if os.path.isabs(path):
        raise ValueError(f"{path!r} is absolute; paths are relative to the workspace folder")
    root = workspace.resolve()
    target = (root / path).resolve()
    if target != root and not target.is_relative_to(root):
        raise ValueError(f"{path!r} is outside the workspace folder")
    return target


def truncate(text: str, limit: int) -> str:
    """At most ``limit`` characters: the head and the tail, with a note of what was cut."""
    if len(text) <= limit:
        return text
    head, tail = limit * 3 // 4, limit // 4
    return f"{text[:head]}\n[... {len(text) - head - tail} characters cut ...]\n{text[-tail:]}"


def minimal_env(workspace: Path) -> dict[str, str]:
    """What a command sees: a PATH and a home, never the worker's keys or database URLs."""
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(workspace),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }


class _HostNotAllowed(Exception):
    pass


@dataclass
class ToolBox:
    """The tools of one attempt, bound to its workspace; remembers the files it wrote."""

    names: tuple[str, ...]
    workspace: Path
    allowed_hosts: tuple[str, ...] = ()
    allow_commands: bool = False
    command_timeout: float = 60.0
    http_timeout: float = HTTP_TIMEOUT
    written: dict[str, int] = field(default_factory=dict)  # relative path -> characters written
    # The operator's MISSIONS_EGRESS_ALLOW (settings.egress_allow): non-public hosts, host:port
    # entries or CIDR blocks http_request may reach. Nothing extra by default.
    egress_allow: tuple[str, ...] = field(default=(), kw_only=True)
    resolve: egress.Resolver = field(default=socket.getaddrinfo, kw_only=True, repr=False)

    def specs(self) -> tuple[ToolSpec, ...]:
        return tuple(SPECS[name] for name in self.names)

    def outcomes(self) -> tuple[dict[str, Any], ...]:
        return tuple({"type": "file", "path": path, "characters": size} for path, size in self.written.items())

    def run(self, call: ToolCall, cancel: threading.Event) -> ToolResult:
        if cancel.is_set():
            raise Cancelled()
        if call.name not in self.names:
            return ToolResult(
                call.id, call.name, f"unknown tool {call.name!r}; available: {', '.join(self.names)}", True
            )
        if call.arguments is None:
            return ToolResult(call.id, call.name, f"the arguments are not a JSON object: {call.raw[:500]!r}", True)
        args = call.arguments
        try:
            match call.name:
                case "http_request":
                    content = self._http(args, cancel)
                case "read_file":
                    content = self._read(args)
                case "write_file":
                    content = self._write(args)
                case "shell":
                    content = self._shell(args, cancel)
                case _:
                    raise ValueError(f"unknown tool {call.name!r}")
        except Cancelled:
            raise
        except egress.EgressRefused as exc:
            return ToolResult(call.id, call.name, f"refused: {exc.reason}", True)
        except egress.EgressError as exc:
            return ToolResult(call.id, call.name, f"request failed: {exc.reason}", True)
        except (ValueError, OSError, _HostNotAllowed) as exc:
            return ToolResult(call.id, call.name, str(exc) or exc.__class__.__name__, True)
        return ToolResult(call.id, call.name, content)

    # -- files ------------------------------------------------------------------------------
    def _read(self, args: Mapping[str, Any]) -> str:
        path = str(args.get("path", ""))
        target = inside(self.workspace, path)
        if not target.is_file():
            raise ValueError(f"no file {path!r} in the workspace")
        return truncate(target.read_text(encoding="utf-8", errors="replace"), READ_LIMIT)

    def _write(self, args: Mapping[str, Any]) -> str:
        path, content = args.get("path"), args.get("content")
        if not isinstance(content, str):
            raise ValueError("content must be a string")
        if len(content) > WRITE_LIMIT:
            raise ValueError(f"content is {len(content)} characters; at most {WRITE_LIMIT} per file")
        target = inside(self.workspace, str(path or ""))
        if target == self.workspace.resolve() or target.is_dir():
            raise ValueError(f"{path!r} is a folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
        relative = target.relative_to(self.workspace.resolve()).as_posix()
        self.written[relative] = len(content)
        return f"wrote {len(content)} characters to {relative}"

    # -- http -------------------------------------------------------------------------------
    def _http(self, args: Mapping[str, Any], cancel: threading.Event) -> str:
        url = str(args.get("url") or "")
        method = str(args.get("method") or "GET").upper()
        if method not in HTTP_METHODS:
            raise ValueError(f"method must be one of {', '.join(HTTP_METHODS)}")
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"{url!r} is not an absolute http(s) URL")
        self._check_host(url)
        headers = args.get("headers") or {}
        if not isinstance(headers, Mapping):
            raise ValueError("headers must be an object of strings")
        body = args.get("body")
        data = body.encode() if isinstance(body, str) else None
        request = urllib.request.Request(  # noqa: S310 - only http(s) URLs of allowedHosts reach here
            url, data=data, method=method, headers={str(k): str(v) for k, v in headers.items()}
        )
        # Every hop (the first request and each redirect) is checked by the egress guard in the
        # opener's handlers and connects to the address that was checked; redirects are also held
        # to allowedHosts here.
        opener = egress.opener(self.egress_allow, resolve=self.resolve, check_redirect=self._check_host)
        return abandonable(lambda: self._fetch(opener, request), cancel, name="http-tool")

    def _check_host(self, url: str) -> None:
        if not self.allowed_hosts:
            raise _HostNotAllowed("this agent may not make HTTP requests: its allowedHosts list is empty")
        if not host_allowed(url, self.allowed_hosts):
            host = urlsplit(url).netloc
            raise _HostNotAllowed(
                f"host {host!r} is not in this agent's allowedHosts ({', '.join(self.allowed_hosts)})"
            )

    def _fetch(self, opener: urllib.request.OpenerDirector, request: urllib.request.Request) -> str:
        try:
            response = opener.open(request, timeout=self.http_timeout)
        except urllib.error.HTTPError as exc:  # a status >= 400 is still an answer
            response = exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (_HostNotAllowed, egress.EgressError)):
                raise exc.reason from None
            raise ValueError(f"request failed: {str(exc.reason)[:300]}") from None
        with response:
            raw = response.read(HTTP_BODY_LIMIT * 4 + 1)
            charset = response.headers.get_content_charset() or "utf-8"
            text = raw.decode(charset, errors="replace")
            return json.dumps(
                {
                    "status": response.status,
                    "contentType": response.headers.get("content-type"),
                    "body": truncate(text, HTTP_BODY_LIMIT),
                },
                ensure_ascii=False,
            )

    # -- shell ------------------------------------------------------------------------------
    def _shell(self, args: Mapping[str, Any], cancel: threading.Event) -> str:
        if not self.allow_commands:
            raise ValueError("the shell tool is disabled on this server (MISSIONS_ALLOW_COMMANDS is not true)")
        command = args.get("command")
        if not isinstance(command, str) or not command.strip():
            raise ValueError("command must be a non-empty string")
        code, output, timed_out = run_command(command, self.workspace, self.command_timeout, cancel)
        if timed_out:
            return f"timed out after {self.command_timeout:g} s (killed)\n{truncate(output, SHELL_OUTPUT_LIMIT)}"
        return f"exit status {code}\n{truncate(output, SHELL_OUTPUT_LIMIT)}"


def run_command(
    command: str, workspace: Path, timeout: float, cancel: threading.Event | None = None, stdin: str | None = None
) -> tuple[int | None, str, bool]:
    """Run ``/bin/sh -c command`` in ``workspace``: (exit status, output, timed out).

    The whole process group is killed on timeout or cancel (``Cancelled`` is raised then).
    """
    workspace.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        ["/bin/sh", "-c", command],
        cwd=workspace,
        env=minimal_env(workspace),
        start_new_session=True,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    chunks: list[bytes] = []

    def pump() -> None:
        assert process.stdout is not None
        size = 0
        for block in iter(lambda: process.stdout.read(65536), b""):  # type: ignore[union-attr]
            if size < SHELL_OUTPUT_LIMIT * 8:
                chunks.append(block)
                size += len(block)

    def feed() -> None:
        assert process.stdin is not None
        try:
            process.stdin.write((stdin or "").encode())
            process.stdin.close()
        except OSError:  # the command exited or closed its input early
            pass

    reader = threading.Thread(target=pump, daemon=True, name="shell-output")
    reader.start()
    if stdin is not None:
        threading.Thread(target=feed, daemon=True, name="shell-input").start()
    deadline = time.monotonic() + timeout
    timed_out = False
    while process.poll() is None:
        if cancel is not None and cancel.is_set():
            _kill(process)
            raise Cancelled()
        if time.monotonic() >= deadline:
            _kill(process)
            timed_out = True
            break
        time.sleep(CANCEL_POLL)
    reader.join(2)
    return process.returncode, b"".join(chunks).decode(errors="replace"), timed_out


def _kill(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(5)
