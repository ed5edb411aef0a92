"""docker-compose.yml, the Procfile and the Dockerfile run exactly the ``missions`` subcommands, with
options the CLI accepts. Docker does not run here, so the files are checked against the CLI itself."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from api.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def parse_with_cli(argv: list[str]) -> list[str]:
    """Parse ``missions ARGV`` with click's own parser, down to the leaf command; returns the
    command path. Raises click.UsageError for an unknown command or option."""
    assert argv[0] == "missions", f"not a missions command: {argv}"
    ctx = main.make_context("missions", list(argv[1:]), resilient_parsing=False)
    path = ["missions"]
    command: click.Command = main
    with ctx:
        while isinstance(command, click.Group):
            # Click keeps the subcommand's name apart from the rest (``protected_args`` before 8.2).
            head = ctx._protected_args if hasattr(ctx, "_protected_args") else ctx.protected_args
            args = [*head, *ctx.args]
            assert args, f"{' '.join(argv)} names no subcommand"
            name, sub, rest = command.resolve_command(ctx, list(args))
            assert sub is not None and name is not None
            path.append(name)
            ctx = sub.make_context(name, rest, parent=ctx)
            command = sub
    return path


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def compose_commands() -> dict[str, list[str]]:
    out = {}
    for name, service in compose()["services"].items():
        command = service.get("command")
        if command is None:
            continue
        argv = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
        if argv[0] == "missions":
            out[name] = argv
    return out


def procfile() -> dict[str, list[str]]:
    out = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        kind, _, command = line.partition(":")
        out[kind.strip()] = shlex.split(command.replace("$PORT", "8000"))
    return out


def test_compose_runs_postgres_redis_a_migration_api_worker_and_beat() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "migrate", "api", "worker", "beat"} <= set(services)
    for name in ("postgres", "redis", "api"):
        assert "healthcheck" in services[name], name
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    commands = compose_commands()
    assert {name: parse_with_cli(argv)[1:] for name, argv in commands.items()} == {
        "migrate": ["db", "upgrade"],
        "api": ["api"],
        "worker": ["worker"],
        "beat": ["beat"],
        "flower": ["flower"],
    }
    assert compose()["services"]["flower"]["profiles"] == ["ops"]  # started only when asked for


@pytest.mark.parametrize("service", ["migrate", "api", "worker", "beat", "flower"])
def test_every_compose_command_parses_with_the_cli(service: str) -> None:
    parse_with_cli(compose_commands()[service])


def test_the_procfile_has_release_web_worker_and_beat_on_missions_commands() -> None:
    entries = procfile()
    assert set(entries) == {"release", "web", "worker", "beat"}
    assert {kind: parse_with_cli(argv)[1:] for kind, argv in entries.items()} == {
        "release": ["db", "upgrade"],
        "web": ["api"],
        "worker": ["worker"],
        "beat": ["beat"],
    }


def test_the_dockerfile_default_command_is_a_missions_command() -> None:
    text = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^CMD\s+(\[.*\])\s*$", text, re.MULTILINE)
    assert match, "the Dockerfile has no CMD in exec form"
    assert parse_with_cli(json.loads(match.group(1)))[1:] == ["api"]


@pytest.mark.parametrize(
    "argv",
    [
        ["missions", "workers"],
        ["missions", "worker", "--concurency", "8"],
        ["missions", "api", "--port", "eighty"],
        ["missions", "db", "migrate"],
    ],
)
def test_the_check_refuses_what_the_cli_would_refuse(argv: list[str]) -> None:
    with pytest.raises(click.UsageError):
        parse_with_cli(argv)


def test_the_worker_queue_choices_are_the_queues_messages_are_sent_to() -> None:
    from workers.messaging.dispatch import CONTROL_QUEUE, TASK_QUEUE, WEBHOOK_QUEUE

    worker = main.commands["worker"]
    choices = next(p for p in worker.params if p.name == "queues").type.choices  # type: ignore[attr-defined]
    assert set(choices) == {"all", TASK_QUEUE, CONTROL_QUEUE, WEBHOOK_QUEUE}
    assert parse_with_cli(["missions", "worker", "--queues", CONTROL_QUEUE, "--concurrency", "2"]) == [
        "missions",
        "worker",
    ]
