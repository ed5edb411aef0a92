"""Runs of a mission as the API sees them: start, resume, abort, change tasks while running, and
read run history. Each command works in the caller's unit of work (``Coordinator.transaction()``),
which sends what the change asks for once its transaction has committed; the caller wraps that
unit of work in ``in_run_trace``, so that what it sends joins the run's trace."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Final, NamedTuple

from orchestrator.engine import (
    RUNNING_MISSION_STATUSES,
    TERMINAL_RUN_STATUSES,
    AbortRequested,
    Event,
    MissionStatus,
    ReassessRequested,
    ResumeRequested,
    ReviewDecision,
    ReviewSubmitted,
    TaskAdded,
    TaskCancelRequested,
    TaskRemoved,
    TaskRetryRequested,
    TaskUpdated,
)
from orchestrator.inputs import merge_run_data
from orchestrator.spec import MissionSpec
from workers.coordination.advance import UnitOfWork
from workers.coordination.outcome import AfterCommit
from workers.store import attempts, missions, runs
from workers.store.db import Connection, Database
from workers.store.missions import Limits, StoredMission
from workers.store.usage import MissionUsage, Totals
from workers.support import tracing
from workers.support.errors import Conflict, Invalid, NotFound
from workers.support.ids import new_id


def _with_project_agents(
    conn: Connection, project_id: str, document: dict[str, Any], project_agents: Collection[str] | None = None
) -> dict[str, Any]:
    """Freeze the project agents the mission names into the run's team, so a run is self-contained
    (``project_agents``, when given, names every agent the project has: none other is looked up)."""
    team = dict(document.get("team") or {"name": "", "volatile": True, "agents": []})
    have = {a["name"] for a in team.get("agents") or ()}
    wanted = set()
    for task in document["tasks"]:
        wanted.add(task["assignTo"])
        fallback = (task.get("retryPolicy") or {}).get("fallbackAgent")
        if fallback:
            wanted.add(fallback)
    missing = sorted(wanted - have)
    if project_agents is not None:
        missing = [name for name in missing if name in project_agents]
    if missing:
        found = runs.project_agents(conn, project_id, missing)
        team["agents"] = list(team.get("agents") or ()) + found
        # Marked, so the run knows them for the project's reusable agents (their limits are shared).
        team["projectAgents"] = sorted(agent["name"] for agent in found)
        document = {**document, "team": team}
    return document


class Started(NamedTuple):
    """A run ``execute`` inserted: its id, what to do after commit, and its row and usage as
    ``get_run`` and ``mission_usage`` would read them right after the commit, for the caller to
    render without reading them back."""

    run_id: str
    outcome: AfterCommit
    row: dict[str, Any]
    usage: MissionUsage


def execute(
    uow: UnitOfWork,
    project_id: str,
    mission_id: str,
    limits: Limits,
    now: datetime,
    data: Mapping[str, Any] | None = None,
) -> Started:
    """Start a new run of the mission; ``Conflict`` while a run is active or paused. ``data``: the
    run's own data, merged over the mission's for this run only (``orchestrator.inputs``) and
    recorded on the run; ``Invalid`` when the mission's data is not an object to merge it into."""
    conn = uow.conn
    mission, project_agents = missions.mission_to_run(conn, project_id, mission_id)
    if mission.status in RUNNING_MISSION_STATUSES:
        raise Conflict(
            f"mission is already {mission.status}; wait for it to finish or abort it first",
            {"runId": mission.row["latest_run_id"]},
        )
    document = _with_project_agents(conn, project_id, mission.full_document(), project_agents)
    if data is not None:
        try:
            document = {**document, "data": merge_run_data(document.get("data"), data)}
        except ValueError as exc:
            raise Invalid(f"data: {exc}", {"fields": {"data": [str(exc)]}}) from None
    spec = missions.validate_document(conn, project_id, document, limits, project_agents)
    run_id = new_id("run")
    number = int(mission.row["execution_count"]) + 1
    outcome = uow.begin_run(run_id, number, spec, mission.id, now, data)
    state = outcome.state
    assert state is not None
    row = {
        "id": run_id,
        "mission_id": mission.id,
        "number": number,
        "status": str(state.status),
        "pause_reason": state.pause_reason.value if state.pause_reason else None,
        "pause_message": state.pause_message,
        "failure_reason": state.failure_reason,
        "created_at": now,
        "started_at": now,
        "finished_at": now if state.status in TERMINAL_RUN_STATUSES else None,
        "input": dict(data) if data is not None else None,
        "run_tasks": [
            state.tasks[t.id].to_json() for t in state.spec.tasks if t.id is not None and t.id in state.tasks
        ],
    }
    started = {(run_id, s.task_id): Totals(attempts=1) for s in outcome.start}  # queued, nothing spent
    usage = MissionUsage(runs={run_id: Totals(attempts=len(started))}, tasks=started)
    return Started(run_id, outcome, row, usage)


def in_run_trace(
    db: Database, project_id: str, mission_id: str, command: str, *, ended_too: bool = True
) -> AbstractContextManager[Any]:
    """The span a request's ``command`` on the mission's latest run works in, wrapped around its
    unit of work: in the run's trace (``tracing.continued``), linked both ways with the request's
    span, so that the steps, the messages sent after commit and the attempts they start are the
    run's. Without ``ended_too``, only while that run is active or paused (a task edited between
    runs changes no run). One read before the command while tracing is on; nothing while it is off.
    (A run begun between the read and the command's lock, by another request, is rare enough for
    its command to land in the previous run's trace.)"""
    if not tracing.enabled():
        return tracing.continued(None, "missions.command")
    with db.autocommit() as conn:
        latest = runs.latest_run_trace(conn, project_id, mission_id)
    if latest is None or not (ended_too or latest["status"] not in TERMINAL_RUN_STATUSES):
        return tracing.continued(None, "missions.command")
    attributes = {**tracing.ids(latest["id"], mission_id), "missions.command": command}
    return tracing.continued(latest["traceparent"], "missions.command", attributes)


def resume(uow: UnitOfWork, project_id: str, mission_id: str, retry_failed: bool, now: datetime) -> AfterCommit:
    """Resume the paused run, or, with ``retry_failed``, continue the latest run when it failed
    because tasks failed (the engine decides which ended runs may go on: ``CONTINUABLE_FAILURES``)."""
    mission = missions.get_mission(uow.conn, project_id, mission_id, for_update=True)
    run_id = _latest_run(mission, _RESUMABLE, "resume")
    outcome = uow.advance(run_id, ResumeRequested(retry_failed), now)
    if outcome is None or outcome.ignored:
        raise Conflict(f"cannot resume: {outcome.ignored if outcome else 'the run is gone'}")
    return outcome


# A mission whose latest run may take a resume with retryFailed: paused, or ended (``scheduled``
# after a run when it has fires left) with a run the engine may continue.
_RESUMABLE: Final = (MissionStatus.PAUSED, MissionStatus.FAILED, MissionStatus.SCHEDULED)


def _latest_run(mission: StoredMission, wanted: Collection[str], action: str) -> str:
    if mission.status not in wanted or not mission.row["latest_run_id"]:
        raise Conflict(f"cannot {action}: the mission is {mission.status}")
    return str(mission.row["latest_run_id"])


def review(
    uow: UnitOfWork,
    project_id: str,
    mission_id: str,
    decision: ReviewDecision,
    feedback: str | None,
    redo: tuple[str, ...],
    reviewer: tuple[str, str],
    now: datetime,
) -> AfterCommit:
    """A person's decision at what waits for one in the paused run (waiting checkpoints, tasks
    awaiting approval), recorded with ``reviewer`` (the API key's id and name). ``redo`` names
    tasks of the mission (400 otherwise, naming the entry); the run decides whether it waits for
    them (409 otherwise)."""
    mission = missions.get_mission(uow.conn, project_id, mission_id, for_update=True)
    titles = {t.title for t in mission.tasks}
    unknown = {f"redo[{i}]": [f"unknown task {title!r}"] for i, title in enumerate(redo) if title not in titles}
    if unknown:
        first = next(iter(unknown))
        raise Invalid(f"{first}: {unknown[first][0]}", {"fields": unknown})
    run_id = _latest_run(mission, (MissionStatus.PAUSED,), "review")
    event = ReviewSubmitted(decision, feedback, redo, reviewer_id=reviewer[0], reviewer_name=reviewer[1])
    outcome = uow.advance(run_id, event, now)
    if outcome is None or outcome.ignored:
        raise Conflict(f"cannot review: {outcome.ignored if outcome else 'the run is gone'}")
    return outcome


def retry_task(uow: UnitOfWork, project_id: str, mission_id: str, task_id: str, now: datetime) -> AfterCommit:
    """Run one failed or cancelled task of the latest run again (for a skipped task, what it was
    skipped because of), with a fresh retry budget; a run that failed because of it goes on."""
    return _task_command(uow, project_id, mission_id, task_id, TaskRetryRequested(task_id), "retry", now)


def reassess_task(uow: UnitOfWork, project_id: str, mission_id: str, task_id: str, now: datetime) -> AfterCommit:
    """Score the last output of a task that failed its assessment again (the judge is sent after
    commit; the agent does not run). Its attempt row is ``assessing`` again in the same transaction
    (a conflict raised after the step rolls the step back too: nothing is sent)."""
    outcome = _task_command(uow, project_id, mission_id, task_id, ReassessRequested(task_id), "reassess", now)
    state = outcome.state
    attempt = state.tasks[task_id].attempt if state is not None else 0
    if not attempts.reopen_for_assessment(uow.conn, outcome.run_id, task_id, attempt, now):
        raise Conflict(f"cannot reassess the task: attempt {attempt} has no assessed output")
    return outcome


def cancel_task(uow: UnitOfWork, project_id: str, mission_id: str, task_id: str, now: datetime) -> AfterCommit:
    """Stop one unfinished task of the live run; its dependents are skipped."""
    return _task_command(uow, project_id, mission_id, task_id, TaskCancelRequested(task_id), "cancel", now)


def _mission_with_task(uow: UnitOfWork, project_id: str, mission_id: str, task_id: str, action: str) -> StoredMission:
    """The mission (locked), 404 unless it has the task, 409 before its first run."""
    mission = missions.get_mission(uow.conn, project_id, mission_id, for_update=True)
    if not any(t.id == task_id for t in mission.tasks):
        raise NotFound(f"task {task_id} not found in mission {mission_id}")
    if not mission.row["latest_run_id"]:
        raise Conflict(f"cannot {action} the task: the mission has not run yet")
    return mission


def _task_command(
    uow: UnitOfWork, project_id: str, mission_id: str, task_id: str, event: Event, action: str, now: datetime
) -> AfterCommit:
    mission = _mission_with_task(uow, project_id, mission_id, task_id, action)
    run_id = str(mission.row["latest_run_id"])
    outcome = uow.advance(run_id, event, now)
    if outcome is None or outcome.ignored:
        raise Conflict(f"cannot {action} the task: {outcome.ignored if outcome else 'the run is gone'}")
    return outcome


def abort(uow: UnitOfWork, project_id: str, mission_id: str, now: datetime) -> AfterCommit:
    mission = missions.get_mission(uow.conn, project_id, mission_id, for_update=True)
    run_id = _latest_run(mission, RUNNING_MISSION_STATUSES, "abort")
    outcome = uow.advance(run_id, AbortRequested(), now)
    if outcome is None or outcome.ignored:
        raise Conflict(f"cannot abort: {outcome.ignored if outcome else 'the run is gone'}")
    return outcome


def add_task(
    uow: UnitOfWork, project_id: str, mission_id: str, document: Mapping[str, Any], limits: Limits, now: datetime
) -> tuple[StoredMission, str, AfterCommit | None]:
    """Add a task to the mission; while it runs, the task joins the running run too."""
    conn = uow.conn
    mission, task_id = missions.add_task(conn, project_id, mission_id, document, limits)
    if mission.status not in RUNNING_MISSION_STATUSES:
        return mission, task_id, None
    full = _with_project_agents(conn, project_id, mission.full_document())
    spec = MissionSpec.from_document(full)
    task = next(t for t in spec.tasks if t.id == task_id)
    outcome = uow.advance(str(mission.row["latest_run_id"]), TaskAdded(task), now)
    return missions.get_mission(conn, project_id, mission_id), task_id, outcome


def update_task(
    uow: UnitOfWork,
    project_id: str,
    mission_id: str,
    task_id: str,
    changes: Mapping[str, Any],
    limits: Limits,
    now: datetime,
) -> tuple[StoredMission, AfterCommit | None]:
    conn = uow.conn
    before = missions.get_mission(conn, project_id, mission_id, for_update=True)
    running = before.status in RUNNING_MISSION_STATUSES
    if running and "title" in changes:
        old = next((t.title for t in before.tasks if t.id == task_id), None)
        if old is not None and changes["title"] != old:
            raise Conflict("a task cannot be renamed while the mission runs")
    mission = missions.update_task(conn, project_id, mission_id, task_id, changes, limits)
    if not running:
        return mission, None
    task = missions.task_spec(mission, task_id)
    outcome = uow.advance(str(mission.row["latest_run_id"]), TaskUpdated(task), now)
    if outcome is not None and outcome.ignored:
        raise Conflict(f"the task cannot change now: {outcome.ignored}")
    return missions.get_mission(conn, project_id, mission_id), outcome


def delete_task(
    uow: UnitOfWork, project_id: str, mission_id: str, task_id: str, limits: Limits, now: datetime
) -> AfterCommit | None:
    mission = missions.delete_task(uow.conn, project_id, mission_id, task_id, limits)
    if mission.status not in RUNNING_MISSION_STATUSES:
        return None
    outcome = uow.advance(str(mission.row["latest_run_id"]), TaskRemoved(task_id), now)
    if outcome is not None and outcome.ignored:
        raise Conflict(f"the task cannot be removed now: {outcome.ignored}")
    return outcome


def get_run(conn: Connection, project_id: str, mission_id: str, run_id: str) -> dict[str, Any]:
    missions.get_mission(conn, project_id, mission_id)  # scope check: 404 for another project's mission
    row = runs.get_run(conn, mission_id, run_id)
    if row is None:
        raise NotFound(f"run {run_id} not found in mission {mission_id}")
    return row


def list_runs(
    conn: Connection, project_id: str, mission_id: str, limit: int, offset: int = 0, after: int | None = None
) -> list[dict[str, Any]]:
    missions.get_mission(conn, project_id, mission_id)
    return runs.list_runs(conn, mission_id, limit, offset, after)


def latest_run_id(conn: Connection, project_id: str, mission_id: str) -> str:
    mission = missions.get_mission(conn, project_id, mission_id)
    if not mission.row["latest_run_id"]:
        raise NotFound(f"mission {mission_id} has not run yet; execute it first")
    return str(mission.row["latest_run_id"])
