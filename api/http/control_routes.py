"""The /v1 routes an operator steers a run with, besides resume and abort: act on one task of the
mission's latest run (retry, reassess, cancel) and decide at a checkpoint or a side-effect approval
(review). Thin: parse, call the shell, render."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, g, jsonify

from api.http import render, schemas
from api.http.routes import json_body, mission_command, protect, services
from orchestrator.engine import ReviewDecision
from workers.coordination import runs
from workers.coordination.advance import UnitOfWork
from workers.store import missions
from workers.store.usage import mission_usage
from workers.support.clock import utcnow

blueprint = Blueprint("control_v1", __name__)
protect(blueprint)  # parameters, key, rate limit, Idempotency-Key: as every /v1 blueprint

Command = Callable[[UnitOfWork, str, str, str, Any], object]


def _task_command(mission_id: str, task_id: str, name: str, command: Command) -> Any:
    """Apply a command to one task of the mission's latest run (sent after commit, in the run's
    trace while tracing is on: ``runs.in_run_trace``), answer with the task as it now stands."""
    svc = services()
    with runs.in_run_trace(svc.db, g.project_id, mission_id, name), svc.coordinator.transaction() as uow:
        command(uow, g.project_id, mission_id, task_id, utcnow())
    with svc.transaction() as conn:
        mission = missions.get_mission(conn, g.project_id, mission_id)
        task = next(t for t in mission.tasks if t.id == task_id)
        body = render.task_detail(mission, task, render.task_statuses(mission), mission_usage(conn, mission_id))
    return jsonify(body)


@blueprint.post("/missions/<mission_id>/tasks/<task_id>/retry")
def retry_task(mission_id: str, task_id: str) -> Any:
    return _task_command(mission_id, task_id, "retry_task", runs.retry_task)


@blueprint.post("/missions/<mission_id>/tasks/<task_id>/reassess")
def reassess_task(mission_id: str, task_id: str) -> Any:
    return _task_command(mission_id, task_id, "reassess_task", runs.reassess_task)


@blueprint.post("/missions/<mission_id>/tasks/<task_id>/cancel")
def cancel_task(mission_id: str, task_id: str) -> Any:
    return _task_command(mission_id, task_id, "cancel_task", runs.cancel_task)


@blueprint.post("/missions/<mission_id>/review")
def review(mission_id: str) -> Any:
    body = json_body(schemas.REVIEW)
    decision, feedback, redo = ReviewDecision(body["decision"]), body.get("feedback"), tuple(body.get("redo") or ())
    who = (g.identity.key_id, g.identity.name)
    return mission_command(
        mission_id,
        "review",
        lambda uow: runs.review(uow, g.project_id, mission_id, decision, feedback, redo, who, utcnow()),
    )
