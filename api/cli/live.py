"""What the CLI shows while a mission runs: one line per task (status, agent, attempt, score,
elapsed), the mission's status and pause reason, and on request the output of the tasks.

``RunView`` is the model: it starts from the mission document (so every task has a line before
it runs) and applies the run's events. A display renders it: ``LiveDisplay`` as a rich table
redrawn in place on a terminal, ``PlainDisplay`` as one timestamped line per change when stdout is
not a terminal (a log, a pipe, CI), ``JsonDisplay`` as one JSON object per event for scripts.
``watch`` drives a display from ``Client.follow`` and returns the status the CLI exits with.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import click
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from api.cli.client import Client, Event

# The exit status of `missions run` (and `demo`, `resume --follow`) for each final mission status.
EXIT_CODES = {"completed": 0, "failed": 1, "paused": 2, "cancelled": 3}
EXIT_CLIENT_ERROR = 4

TERMINAL_TASK = ("completed", "failed", "skipped", "cancelled")
_STYLE = {
    "draft": "dim",
    "pending": "dim",
    "queued": "cyan",
    "running": "bold yellow",
    "assessing": "magenta",
    "completed": "green",
    "failed": "bold red",
    "skipped": "dim red",
    "cancelled": "red",
    "awaiting_approval": "bold magenta",
    "active": "bold yellow",
    "paused": "bold magenta",
    "scheduled": "cyan",
}
_MARK = {
    "completed": "✓",
    "failed": "✗",
    "skipped": "-",
    "cancelled": "✗",
    "running": "▶",
    "assessing": "…",
    "queued": "·",
    "awaiting_approval": "?",
}
OUTPUT_KEEP_CHARS = 20_000


def event_time(event: Event) -> float | None:
    """When the event happened (its ``timestamp``, as epoch seconds), if the server said."""
    stamp = event.data.get("timestamp")
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def clock(at: float | None = None) -> str:
    """``HH:MM:SS`` of ``at`` (epoch seconds, else now) in the viewer's local time."""
    return (datetime.fromtimestamp(at) if at is not None else datetime.now()).strftime("%H:%M:%S")


@dataclass
class TaskRow:
    id: str
    title: str
    status: str = "pending"
    agent: str | None = None
    attempt: int | None = None
    score: float | None = None
    error: str | None = None
    error_code: str | None = None  # the code of the latest attempt's error event
    started: float | None = None
    finished: float | None = None
    output: str = ""

    def elapsed(self, now: float) -> float | None:
        if self.started is None:
            return None
        return (self.finished or now) - self.started


@dataclass
class RunView:
    mission_id: str
    name: str
    status: str
    tasks: dict[str, TaskRow] = field(default_factory=dict)
    run_id: str | None = None
    pause_reason: str | None = None
    pause_message: str | None = None
    reason: str | None = None
    last_output_task: str | None = None

    @classmethod
    def of(cls, mission: Mapping[str, Any]) -> RunView:
        view = cls(str(mission["id"]), str(mission.get("name", "")), str(mission.get("status", "")))
        for task in mission.get("tasks") or []:
            view.tasks[task["id"]] = TaskRow(task["id"], task["title"], status="pending", agent=task.get("assignTo"))
        return view

    def task(self, task_id: str, title: str | None = None) -> TaskRow:
        row = self.tasks.get(task_id)
        if row is None:  # a task added while the run is active
            row = self.tasks[task_id] = TaskRow(task_id, title or task_id)
        return row

    def apply(self, event: Event, now: float | None = None) -> list[str]:
        """Update the view; the lines a person should read about this event (none for output).

        Times are the event's own (its ``timestamp``), so a replayed run shows when its tasks
        really ran and for how long; ``now`` (else the clock) only for an event without one."""
        now = event_time(event) or (time.time() if now is None else now)
        data = event.data
        self.run_id = self.run_id or data.get("runId")
        match event.type:
            case "task:status":
                row = self.task(data["taskId"], data.get("title"))
                row.status = data["status"]
                row.agent = data.get("agent") or row.agent
                row.attempt = data.get("attempt") or row.attempt
                row.error = data.get("error")
                if row.status == "queued":
                    row.started = row.finished = None
                elif row.status == "running" and (row.started is None or row.finished is not None):
                    row.started, row.finished = now, None
                    row.output = ""
                elif row.status in TERMINAL_TASK and row.started is not None and row.finished is None:
                    row.finished = now
                text = f'task "{row.title}" {row.status}{self._task_detail(row, now)}'
                if row.error and row.status in ("failed", "pending", "awaiting_approval"):
                    tag = f"[{row.error_code}] " if row.error_code else ""
                    text += f": {tag}{row.error}"
                row.error_code = None
                return [text]
            case "task:output":
                row = self.task(data["taskId"])
                row.output = (row.output + str(data.get("chunk", "")))[-OUTPUT_KEEP_CHARS:]
                self.last_output_task = row.id
                return []
            case "task:assessment":
                row = self.task(data["taskId"])
                row.score = data.get("score")
                verdict = "passed" if data.get("passed") else "below the bar"
                score = "no score" if row.score is None else f"{row.score:g}"
                text = f'task "{row.title}" scored {score} ({verdict}, threshold {data.get("threshold")})'
                if data.get("error"):
                    text += f": {data['error']}"
                return [text]
            case "gate:blocked":
                name = data.get("name") or f"#{data.get('gate', 0) + 1}"
                return [f"quality gate {name} blocked: {data.get('reason')}"]
            case "checkpoint:waiting":
                name = data.get("name") or f"#{data.get('checkpoint', 0) + 1}"
                return [f"checkpoint {name} waiting: {data.get('message')}"]
            case "mission:status":
                self.status = data["status"]
                self.pause_reason = data.get("pauseReason")
                self.pause_message = data.get("pauseMessage")
                self.reason = data.get("reason")
                return [f"mission {self.status_line()}"]
            case "mission:done":
                self.status = data["status"]
                self.reason = data.get("reason")
                self.pause_reason = self.pause_message = None
                return []
            case "error":
                message = data.get("message") or data.get("error") or json.dumps(data)
                code = data.get("code")
                if data.get("taskId"):
                    # The task's status change comes right after it, in the same step, with the
                    # message: that line shows the code too, so this one says nothing on its own.
                    self.task(data["taskId"], data.get("title")).error_code = code
                    return []
                return [f"error [{code}]: {message}" if code else f"error: {message}"]
            case "review:decided":
                reviewer = data.get("reviewer") or {}
                who = (
                    "a timeout" if data.get("timedOut") else reviewer.get("name") or reviewer.get("id") or "a reviewer"
                )
                text = f"review: {data.get('decision')} by {who}"
                if data.get("redo"):
                    text += " (redo " + ", ".join(f'"{t}"' for t in data["redo"]) + ")"
                return [text + (f": {data['feedback']}" if data.get("feedback") else "")]
            case "delay:started":
                blocked = ", ".join(f'"{t}"' for t in data.get("blocksTasks") or ())
                return [f"delay {_delay_name(data)}: {blocked} wait until {data.get('until')}"]
            case "delay:ended":
                return [f"delay {_delay_name(data)} is over"]
            case _:
                return []

    def status_line(self) -> str:
        text = self.status
        if self.status == "paused" and self.pause_reason:
            text += f" ({self.pause_reason})"
            if self.pause_message:
                text += f": {self.pause_message}"
        elif self.reason:
            text += f" ({self.reason})"
        return text

    @staticmethod
    def _task_detail(row: TaskRow, now: float) -> str:
        parts = []
        if row.agent:
            parts.append(row.agent)
        if row.attempt:
            parts.append(f"attempt {row.attempt}")
        if row.score is not None and row.status in TERMINAL_TASK:
            parts.append(f"score {row.score:g}")
        elapsed = row.elapsed(now)
        if elapsed is not None and row.status in TERMINAL_TASK:
            parts.append(f"{elapsed:.1f}s")
        return f" ({', '.join(parts)})" if parts else ""

    def summary_lines(self, now: float | None = None, *, errors: bool = False) -> list[str]:
        """One line per task (``✓ Title  completed (agent, attempt 1, score 4.5, 1.2s)``); with
        ``errors`` the error of a failed task follows its line."""
        now = time.time() if now is None else now
        width = max((len(r.title) for r in self.tasks.values()), default=0)
        lines = []
        for row in self.tasks.values():
            lines.append(
                f"  {_MARK.get(row.status, ' ')} {row.title.ljust(width)}  {row.status}{self._task_detail(row, now)}"
            )
            if errors and row.error and row.status in ("failed", "awaiting_approval"):
                lines.append(f"      {row.error}")
        return lines


class Display(Protocol):
    def start(self, view: RunView) -> None: ...
    def event(self, event: Event) -> None: ...
    def note(self, text: str) -> None: ...
    def stop(self) -> None: ...


class PlainDisplay:
    """One line per change, for logs and pipes; with ``follow_output`` the output chunks too."""

    def __init__(self, echo: Callable[[str], None] = click.echo, follow_output: bool = False) -> None:
        self.echo = echo
        self.follow_output = follow_output
        self.view: RunView | None = None

    def _line(self, text: str, at: float | None = None) -> None:
        self.echo(f"{clock(at)} {text}")

    def start(self, view: RunView) -> None:
        self.view = view
        self._line(f'mission "{view.name}" ({view.mission_id}) {view.status}, {len(view.tasks)} tasks')

    def event(self, event: Event) -> None:
        assert self.view is not None
        for text in self.view.apply(event):
            self._line(text, event_time(event))
        if self.follow_output and event.type == "task:output":
            row = self.view.task(event.data["taskId"])
            for piece in str(event.data.get("chunk", "")).splitlines() or [""]:
                self.echo(f"    {row.title} | {piece}")

    def note(self, text: str) -> None:
        self._line(text)

    def stop(self) -> None:
        assert self.view is not None
        self._line(f'mission "{self.view.name}" {self.view.status_line()}')
        for line in self.view.summary_lines():
            self.echo(line)


class JsonDisplay:
    """One JSON object per line: every event as received, then the final mission status."""

    def __init__(self, echo: Callable[[str], None] = click.echo) -> None:
        self.echo = echo
        self.view: RunView | None = None

    def start(self, view: RunView) -> None:
        self.view = view

    def event(self, event: Event) -> None:
        assert self.view is not None
        self.view.apply(event)
        self.echo(json.dumps({"id": event.id, "event": event.type, "data": event.data}))

    def note(self, text: str) -> None:
        self.echo(json.dumps({"note": text}))

    def stop(self) -> None:
        assert self.view is not None
        view = self.view
        self.echo(
            json.dumps(
                {
                    "missionId": view.mission_id,
                    "runId": view.run_id,
                    "status": view.status,
                    "pauseReason": view.pause_reason,
                    "pauseMessage": view.pause_message,
                    "tasks": [
                        {
                            "id": r.id,
                            "title": r.title,
                            "status": r.status,
                            "agent": r.agent,
                            "attempt": r.attempt,
                            "score": r.score,
                        }
                        for r in view.tasks.values()
                    ],
                }
            )
        )


class LiveDisplay:
    """A rich table redrawn in place; notes scroll above it; the last table stays on screen."""

    def __init__(self, console: Console | None = None, follow_output: bool = False, output_lines: int = 12) -> None:
        self.console = console or Console()
        self.follow_output = follow_output
        self.output_lines = output_lines
        self.view: RunView | None = None
        self._lock = threading.Lock()
        self._live: Live | None = None

    def start(self, view: RunView) -> None:
        self.view = view
        self._live = Live(
            console=self.console,
            get_renderable=self._render,
            refresh_per_second=8,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()

    def event(self, event: Event) -> None:
        assert self.view is not None
        with self._lock:
            lines = self.view.apply(event)
        # The table shows the state; what a person must read (why something failed, blocked or
        # waits) also scrolls above it.
        if (
            event.type in ("gate:blocked", "checkpoint:waiting", "error", "review:decided", "delay:started")
            or (event.type == "task:status" and event.data.get("error"))
            or (event.type == "task:assessment" and not event.data.get("passed"))
        ):
            for line in lines:
                self.note(line, event_time(event))
        if self._live is not None:
            self._live.refresh()

    def note(self, text: str, at: float | None = None) -> None:
        self.console.print(Text(f"{clock(at)} {text}", style="dim"))

    def stop(self) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None

    def _render(self) -> Any:
        with self._lock:
            return self._renderable()

    def _renderable(self) -> Any:
        view = self.view
        assert view is not None
        now = time.time()
        title = Text.assemble(
            (f"{view.name}", "bold"), f"  {view.mission_id}  ", (view.status_line(), _STYLE.get(view.status, ""))
        )
        table = Table(title=title, title_justify="left", expand=False, show_edge=False, pad_edge=False)
        table.add_column("", width=1)
        table.add_column("task", overflow="fold")
        table.add_column("status")
        table.add_column("agent")
        table.add_column("attempt", justify="right")
        table.add_column("score", justify="right")
        table.add_column("elapsed", justify="right")
        for row in view.tasks.values():
            elapsed = row.elapsed(now)
            style = _STYLE.get(row.status, "")
            table.add_row(
                _MARK.get(row.status, " "),
                row.title,
                Text(row.status, style=style),
                row.agent or "",
                str(row.attempt or ""),
                "" if row.score is None else f"{row.score:g}",
                "" if elapsed is None else f"{elapsed:.1f}s",
            )
        parts: list[Any] = [table]
        if self.follow_output and view.last_output_task:
            row = view.tasks[view.last_output_task]
            tail = "\n".join(row.output.splitlines()[-self.output_lines :])
            parts.append(
                Panel(
                    Text(tail),
                    title=f"output: {row.title} (attempt {row.attempt or 1})",
                    title_align="left",
                    border_style="dim",
                )
            )
        return Group(*parts)


def make_display(*, json_output: bool, follow_output: bool, console: Console | None = None) -> Display:
    if json_output:
        return JsonDisplay()
    console = console or Console()
    if console.is_terminal and not console.is_dumb_terminal:
        return LiveDisplay(console, follow_output=follow_output)
    return PlainDisplay(follow_output=follow_output)


def watch(
    client: Client,
    mission_id: str,
    run_id: str | None,
    display: Display,
    *,
    on_pause: Callable[[dict[str, Any]], bool] | None = None,
) -> str:
    """Show the run until it ends or pauses; returns the mission's final (or paused) status.

    ``on_pause`` is offered every live pause; when it returns True (it resumed the mission) the
    run is followed further. A pause found in the replay that is already over is skipped."""
    mission = client.get_mission(mission_id)
    view = RunView.of(mission)
    display.start(view)
    try:
        ended: str | None = None
        for event in client.follow(mission_id, run_id, on_reconnect=display.note):
            display.event(event)
            # The stream ends after the run's latest mission:done; one followed by more events
            # was replayed from a run that an operator continued after it failed.
            ended = str(event.data["status"]) if event.type == "mission:done" else None
            if event.type == "mission:status" and event.data.get("status") == "paused":
                current = client.get_mission(mission_id)
                if current.get("status") != "paused" or current.get("latestRunId") != event.data.get("runId"):
                    continue  # replayed from the log: that pause is over
                if on_pause is not None and on_pause(event.data):
                    continue
                return "paused"
        return ended or str(client.get_mission(mission_id)["status"])
    finally:
        display.stop()


def _delay_name(data: Mapping[str, Any]) -> str:
    return str(data.get("name") or f"#{int(data.get('delay', 0)) + 1}")
