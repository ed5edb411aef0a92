"""Client commands: talk to a running server over HTTP (``run``, ``demo``, ``list``, ``show``,
``resume``, ``review``, ``abort``, ``task retry|reassess|cancel``, ``events``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from api.cli.common import load_settings
from orchestrator.engine import MissionStatus

# -- Client commands: talk to a running server over HTTP ----------------------------------------
# Exit status of run/demo/resume --follow: 0 completed, 1 failed, 2 paused, 3 cancelled,
# 4 the server could not be reached or refused the request.


class ClientError(click.ClickException):
    exit_code = 4


def client_options(command: Any) -> Any:
    command = click.option(
        "--key",
        envvar="MISSIONS_KEY",
        default=None,
        help="API key (MISSIONS_KEY; default: the key `missions up` keeps in the data dir).",
    )(command)
    return click.option(
        "--url",
        envvar="MISSIONS_URL",
        default=None,
        help="Server URL (MISSIONS_URL; default: the `missions up` running on the data dir, else "
        "http://127.0.0.1:8000).",
    )(command)


def server_url(url: str | None) -> str:
    """``url`` if given, else the URL of the ``missions up`` that owns the data dir, else the default."""
    from api.cli.client import DEFAULT_URL
    from workers.support import instance

    if url:
        return url
    running = instance.running(load_settings().data_dir)
    return str(running["url"]) if running and running.get("url") else DEFAULT_URL


def make_client(url: str | None, key: str | None) -> Any:
    from api.cli.client import Client
    from api.cli.up import KEY_FILE

    if not key:
        kept = load_settings().data_dir / KEY_FILE
        if kept.exists():
            key = kept.read_text().strip()
    if not key:
        raise ClientError(
            "no API key: pass --key, set MISSIONS_KEY, or start `missions up` "
            "(it keeps a key for the project 'default' in the data dir)"
        )
    return Client(server_url(url), key)


def echo_json(value: Any) -> None:
    import json

    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


@contextmanager
def api_errors() -> Iterator[None]:
    """Turn the client's errors into a message and exit status 4."""
    from api.cli.client import ApiError

    try:
        yield
    except ApiError as exc:
        raise ClientError(str(exc)) from None


def read_mission_file(path: str) -> dict[str, Any]:
    """A mission document from a JSON or YAML file (``-`` reads standard input)."""
    import datetime as dt
    import json

    import yaml

    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    try:
        document = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise click.BadParameter(f"{path} is neither valid JSON nor valid YAML: {exc}", param_hint="FILE") from None

    def plain(value: Any) -> Any:  # YAML turns unquoted timestamps into datetimes; the API wants strings
        if isinstance(value, dt.datetime):
            return value.isoformat().replace("+00:00", "Z") if value.tzinfo else value.isoformat() + "Z"
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    if not isinstance(document, dict):
        raise click.BadParameter(f"{path} must hold one mission object", param_hint="FILE")
    return dict(plain(document))


def read_run_data(value: str) -> dict[str, Any]:
    """``--data``: a JSON object given inline, or ``@path`` to a file holding one."""
    import json

    text, where = value, "--data"
    if value.startswith("@"):
        where = value[1:]
        try:
            text = Path(where).read_text(encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(f"cannot read {where}: {exc.strerror or exc}", param_hint="--data") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"{where} is not valid JSON: {exc}", param_hint="--data") from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{where} must hold a JSON object", param_hint="--data")
    return data


def follow_run(
    client: Any, mission_id: str, run_id: str | None, *, json_output: bool, follow_output: bool, on_pause: Any = None
) -> int:
    from api.cli.live import EXIT_CLIENT_ERROR, EXIT_CODES, make_display, watch

    display = make_display(json_output=json_output, follow_output=follow_output)
    with api_errors():
        status = watch(client, mission_id, run_id, display, on_pause=on_pause)
        if status == "paused":
            mission = client.get_mission(mission_id)
            click.echo(resume_hint(mission_id, mission.get("pauseReason"), _url_option(client.base)), err=True)
    return EXIT_CODES.get(status, EXIT_CLIENT_ERROR)


def _url_option(url: str) -> str:
    """`` --url URL`` when a later command would not find this server by itself."""
    return "" if url.rstrip("/") == server_url(None).rstrip("/") else f" --url {url}"


def resume_hint(mission_id: str, pause_reason: str | None, url_option: str = "") -> str:
    """What to type to go on from a pause (exit status 2), for each pause reason."""
    resume = f"missions resume {mission_id}{url_option}"
    match pause_reason:
        case "quality_gate":
            return (
                f"paused: a quality gate blocked. Re-run its failed tasks with: {resume} --retry-failed --follow\n"
                f"  (or override the gate: {resume} --follow)"
            )
        case "approval":
            return (
                "paused: a task with side effects lost its worker and waits for approval. Re-run it with: "
                f"{resume} --retry-failed --follow\n  (or mark it failed: {resume} --follow)"
            )
        case "checkpoint":
            return f"paused at a checkpoint. Approve and go on with: {resume} --follow"
        case _:
            return f"paused. Resume it with: {resume} --follow"


@click.command("run")
@click.argument("target", metavar="FILE|MISSION_ID")
@client_options
@click.option("--name", default=None, help="Create the mission under this name instead of the file's.")
@click.option("--follow-output", is_flag=True, help="Also stream what the agents write.")
@click.option("--json", "json_output", is_flag=True, help="Print every event as one JSON object per line.")
@click.option("--detach", is_flag=True, help="Start the run, print its ids and return at once.")
@click.option(
    "--data",
    "data_arg",
    default=None,
    metavar="JSON|@FILE",
    help="This run's own data (a JSON object, or @file with one), merged over the mission's data for this run.",
)
def run_command(
    target: str,
    url: str | None,
    key: str | None,
    name: str | None,
    follow_output: bool,
    json_output: bool,
    detach: bool,
    data_arg: str | None,
) -> None:
    """Create a mission from FILE (JSON or YAML) and execute it, showing it live.

    Given a mission id instead of a file, execute that mission again. Exit status: 0 completed,
    1 failed, 2 paused (resume it with `missions resume`), 3 cancelled, 4 client error."""
    data = read_run_data(data_arg) if data_arg is not None else None
    client = make_client(url, key)
    with api_errors():
        if target.startswith("msn_") and not Path(target).exists():
            mission_id = target
        else:
            document = read_mission_file(target)
            if name:
                document["name"] = name
            mission_id = _create_or_explain(client, document)
        run = client.execute(mission_id, data)
    if detach:
        if json_output:
            echo_json({"missionId": mission_id, "runId": run["id"], "status": run["status"]})
        else:
            click.echo(f"{mission_id} {run['id']} {run['status']}")
        return
    sys.exit(follow_run(client, mission_id, run["id"], json_output=json_output, follow_output=follow_output))


def _create_or_explain(client: Any, document: dict[str, Any]) -> str:
    from api.cli.client import ApiError

    try:
        return str(client.create_mission(document)["id"])
    except ApiError as exc:
        fields = exc.details.get("fields") if isinstance(exc.details, dict) else None
        if exc.status != 409 or not isinstance(fields, dict) or "name" not in fields:
            raise
        existing = next((m["id"] for m in client.list_missions(limit=1000) if m["name"] == document.get("name")), None)
        hint = f"run it again with `missions run {existing}`, or " if existing else ""
        raise ClientError(
            f"a mission named {document.get('name')!r} already exists; {hint}create another with --name NEW_NAME"
        ) from None


@click.command("demo")
@client_options
@click.option("--follow-output", is_flag=True, help="Also stream what the agents write.")
@click.option("--json", "json_output", is_flag=True, help="Print every event as one JSON object per line.")
def demo_command(url: str | None, key: str | None, follow_output: bool, json_output: bool) -> None:
    """Run a built-in example mission on scripted agents (offline), live.

    Against a server with --url/--key (or MISSIONS_URL/MISSIONS_KEY); with neither, on a private
    temporary stack (embedded Postgres and Redis, API, worker, beat) removed afterwards. The demo
    shows a retry, a quality gate resumed with retryFailed, and a checkpoint it approves itself."""
    from api.cli.demo import run_demo
    from api.cli.live import EXIT_CLIENT_ERROR, EXIT_CODES, make_display

    display = make_display(json_output=json_output, follow_output=follow_output)
    if url or key:
        client = make_client(url, key)
        with api_errors():
            status = run_demo(client, display)
        sys.exit(EXIT_CODES.get(status, EXIT_CLIENT_ERROR))
    sys.exit(_demo_on_private_stack(display))


def _demo_on_private_stack(display: Any) -> int:
    from api.cli.client import Client
    from api.cli.demo import private_stack_dir, remove_stack_dir, run_demo
    from api.cli.live import EXIT_CLIENT_ERROR, EXIT_CODES
    from api.cli.up import ChildExited, LocalStack, SignalGuard, Stop, running_stack
    from workers.support.embedded import free_port

    folder = private_stack_dir()
    settings = load_settings().replace(
        database_url=None, redis_url=None, data_dir=folder / "data", host="127.0.0.1", port=free_port()
    )
    stack = LocalStack(
        settings,
        workers=1,
        concurrency=4,
        log_dir=folder / "logs",
        extra_env={"MISSIONS_TICK_SECONDS": "0.5", "MISSIONS_LOG_LEVEL": "warning"},
        stop_timeout=5.0,
    )  # throw-away: no reason to wait long for running agents
    click.echo(f"demo: starting a private Missions (embedded Postgres and Redis) in {folder}", err=True)
    started = False
    try:
        with SignalGuard() as guard:
            try:
                with running_stack(stack, guard, label="demo"):
                    started = True
                    click.echo(f"demo: ready at {stack.url}", err=True)
                    client = Client(stack.url, stack.key)
                    try:
                        with api_errors():
                            status = run_demo(client, display)
                    finally:
                        client.close()  # an idle keep-alive connection would hold up the API's shutdown
                    return EXIT_CODES.get(status, EXIT_CLIENT_ERROR)
            except Stop:
                return 130
            except (ChildExited, TimeoutError) as exc:
                click.echo(f"demo: the private stack failed: {exc}\n{stack.log_tail()}", err=True)
                return EXIT_CLIENT_ERROR
    finally:
        if started:
            click.echo("demo: stopped the private stack", err=True)
        remove_stack_dir(folder)


@click.command("list")
@client_options
@click.option("--status", type=click.Choice([s.value for s in MissionStatus]), default=None)
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--json", "json_output", is_flag=True, help="Print the API's JSON.")
def list_command(url: str | None, key: str | None, status: str | None, limit: int, json_output: bool) -> None:
    """List missions (newest first)."""
    client = make_client(url, key)
    with api_errors():
        rows = client.list_missions(status=status, limit=limit)
    if json_output:
        echo_json(rows)
        return
    if not rows:
        click.echo("no missions")
        return
    width = max(len(r["name"]) for r in rows)
    for row in rows:
        click.echo(
            f"{row['id']}  {row['name'].ljust(width)}  {row['status']:<10} runs {row['executionCount']:<3} "
            f"tasks {row['taskCount']}"
        )


@click.command("show")
@click.argument("mission_id")
@client_options
@click.option("--json", "json_output", is_flag=True, help="Print the API's JSON.")
def show_command(mission_id: str, url: str | None, key: str | None, json_output: bool) -> None:
    """Show a mission and the state of each of its tasks in the latest run."""
    from api.cli.live import RunView

    client = make_client(url, key)
    with api_errors():
        mission = client.get_mission(mission_id)
    if json_output:
        echo_json(mission)
        return
    view = RunView.of(mission)
    for task in mission.get("tasks", []):
        row = view.tasks[task["id"]]
        row.status, row.attempt, row.score = task.get("status", row.status), task.get("attempt"), task.get("score")
        row.agent = task.get("agent") or row.agent
        row.error = task.get("error")
    view.pause_reason, view.pause_message = mission.get("pauseReason"), mission.get("pauseMessage")
    view.reason = mission.get("failureReason")
    click.echo(f'{mission["id"]}  "{mission["name"]}"  {view.status_line()}  runs {mission.get("executionCount", 0)}')
    for line in view.summary_lines(errors=True):
        click.echo(line)


@click.command("resume")
@click.argument("mission_id")
@client_options
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Re-run failed and low-scoring tasks (gates, approvals); continues a failed mission's run.",
)
@click.option("--follow", is_flag=True, help="Then show the run live (exit status as for `run`).")
@click.option("--follow-output", is_flag=True, help="With --follow, also stream what the agents write.")
@click.option("--json", "json_output", is_flag=True, help="Print JSON.")
def resume_command(
    mission_id: str,
    url: str | None,
    key: str | None,
    retry_failed: bool,
    follow: bool,
    follow_output: bool,
    json_output: bool,
) -> None:
    """Resume a paused mission (checkpoint, quality gate or approval); with --retry-failed, also
    continue a failed mission whose tasks failed: the same run goes on, completed tasks are not run
    again."""
    client = make_client(url, key)
    with api_errors():
        mission = client.resume(mission_id, retry_failed)
    if follow:
        sys.exit(
            follow_run(
                client, mission_id, mission.get("latestRunId"), json_output=json_output, follow_output=follow_output
            )
        )
    if json_output:
        echo_json(mission)
    else:
        click.echo(f"{mission_id} {mission['status']}")


@click.command("review")
@click.argument("mission_id")
@client_options
@click.option("--approve", "approve", is_flag=True, help="Go on (a task awaiting approval runs again).")
@click.option("--request-changes", "changes", metavar="FEEDBACK", default=None, help="Send work back with FEEDBACK.")
@click.option("--redo", multiple=True, metavar="TASK", help="With --request-changes: an afterTask to redo (repeat it).")
@click.option("--reject", "rejection", metavar="FEEDBACK", default=None, help="Fail the mission (reason rejected).")
@click.option("--json", "json_output", is_flag=True, help="Print the API's JSON.")
def review_command(
    mission_id: str,
    url: str | None,
    key: str | None,
    approve: bool,
    changes: str | None,
    redo: tuple[str, ...],
    rejection: str | None,
    json_output: bool,
) -> None:
    """Decide at a waiting checkpoint or side-effect approval: --approve, --request-changes FEEDBACK
    [--redo TASK ...] (those tasks re-run with the feedback, and the checkpoint is reached again),
    or --reject FEEDBACK."""
    chosen = [
        name
        for name, given in (("--approve", approve), ("--request-changes", changes), ("--reject", rejection))
        if given not in (None, False)
    ]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --approve, --request-changes FEEDBACK, --reject FEEDBACK")
    if redo and changes is None:
        raise click.UsageError("--redo goes with --request-changes")
    decision = "approve" if approve else "request_changes" if changes is not None else "reject"
    client = make_client(url, key)
    with api_errors():
        mission = client.review(mission_id, decision, changes if changes is not None else rejection, redo)
    if json_output:
        echo_json(mission)
    else:
        click.echo(f"{mission_id} {mission['status']}")


@click.group("task")
def task_group() -> None:
    """Act on one task of a mission's latest run."""


def _task_action(action: str, help_text: str) -> Any:
    @click.command(action, help=help_text)
    @click.argument("mission_id")
    @click.argument("task")
    @client_options
    @click.option("--json", "json_output", is_flag=True, help="Print the API's JSON.")
    def command(mission_id: str, task: str, url: str | None, key: str | None, json_output: bool) -> None:
        client = make_client(url, key)
        with api_errors():
            task_id = _task_id(client.get_mission(mission_id), task)
            answer = client.task_command(mission_id, task_id, action)
        if json_output:
            echo_json(answer)
        else:
            click.echo(f'{mission_id} task "{answer["title"]}" {answer["status"]}')

    return command


def _task_id(mission: dict[str, Any], task: str) -> str:
    """TASK is a task id or a title of the mission."""
    for item in mission.get("tasks") or ():
        if task in (item.get("id"), item.get("title")):
            return str(item["id"])
    raise click.BadParameter(f"the mission has no task with id or title {task!r}", param_hint="TASK")


task_group.add_command(
    _task_action(
        "retry",
        "Run a failed or cancelled task again with a fresh retry budget (for a skipped task: what it was "
        "skipped because of). TASK is its id or title. A run that failed because of it goes on.",
    )
)
task_group.add_command(
    _task_action(
        "reassess",
        "Score the last output of a task that failed its assessment again (after the judge was fixed); "
        "the agent does not run. TASK is its id or title.",
    )
)
task_group.add_command(
    _task_action(
        "cancel",
        "Stop one unfinished task now; its dependents are skipped, independent branches go on. "
        "TASK is its id or title.",
    )
)


@click.command("abort")
@click.argument("mission_id")
@client_options
@click.option("--json", "json_output", is_flag=True, help="Print the API's JSON.")
def abort_command(mission_id: str, url: str | None, key: str | None, json_output: bool) -> None:
    """Stop a mission now: running agents are cancelled, unfinished tasks too."""
    client = make_client(url, key)
    with api_errors():
        mission = client.abort(mission_id)
    if json_output:
        echo_json(mission)
    else:
        click.echo(f"{mission_id} {mission['status']}")


@click.command("events")
@click.argument("mission_id")
@client_options
@click.option("--run", "run_id", default=None, help="A run id (default: the latest run).")
@click.option(
    "--after",
    "last_event_id",
    type=click.IntRange(0),
    default=None,
    help="Only events after this id (as Last-Event-ID).",
)
@click.option("--json", "json_output", is_flag=True, help="One JSON object per event.")
def events_command(
    mission_id: str, url: str | None, key: str | None, run_id: str | None, last_event_id: int | None, json_output: bool
) -> None:
    """Print a run's events, then follow it live until it ends (Ctrl-C to stop)."""
    import json

    client = make_client(url, key)
    with api_errors():
        for event in client.follow(
            mission_id, run_id, last_event_id, on_reconnect=lambda text: click.echo(f"# {text}", err=True)
        ):
            if json_output:
                click.echo(json.dumps({"id": event.id, "event": event.type, "data": event.data}))
            else:
                data = {k: v for k, v in event.data.items() if k not in ("missionId", "runId")}
                click.echo(f"{event.id or '':>8} {event.type:<18} {json.dumps(data, ensure_ascii=False)}")
