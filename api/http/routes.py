"""The /v1 routes for missions and their tasks. Thin: parse, call the shell, render."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from marshmallow import Schema

from api.http import cursors, idempotency, ratelimit, render, schemas, sse
from api.http.errors import error_response
from api.http.limits import open_stream
from workers.coordination import runs
from workers.coordination.advance import UnitOfWork
from workers.store import events as event_log
from workers.store import missions, projects, reports, schedules
from workers.store.usage import mission_usage, runs_usage
from workers.support.clock import utcnow
from workers.support.errors import Invalid, NotFound
from workers.wiring import Services

blueprint = Blueprint("missions_v1", __name__)


def services() -> Services:
    svc: Services = current_app.extensions["missions"]
    return svc


def limits() -> missions.Limits:
    settings = services().settings
    return missions.Limits.from_settings(settings)


def check_url() -> None:
    """Path and query parameters hold text Postgres can store (no NUL, no unpaired surrogate): any
    other is a 400 naming the parameter, before it reaches a query."""
    params = [(PARAM_NAMES.get(k, k), v) for k, v in (request.view_args or {}).items()]
    params += [(k, v) for k, values in request.args.lists() for v in (k, *values)]
    problems: dict[str, list[str]] = {}
    for name, value in params:
        problem = schemas.text_problem(value) if isinstance(value, str) else None
        if problem is not None:
            problems.setdefault(schemas.printable(name), []).append(problem)
    if problems:
        first_field, first_messages = next(iter(problems.items()))
        raise Invalid(f"{first_field}: {first_messages[0]}", {"fields": problems})


PARAM_NAMES = {
    "mission_id": "missionId",
    "task_id": "taskId",
    "run_id": "runId",
    "webhook_id": "webhookId",
    "delivery_id": "deliveryId",
    "key_id": "keyId",
}


def authenticate() -> Response | None:
    """The key of every request is looked up in Postgres (one read; no cache), so a revoked key is
    refused at once by every API process."""
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return _unauthorized("missing API key: send Authorization: Bearer sk_live_...")
    with services().autocommit() as conn:  # one read: no BEGIN/COMMIT round trips
        identity = projects.identify(conn, secret.strip())
    if identity is None:
        return _unauthorized("invalid API key")
    g.identity = identity
    g.project_id = identity.project_id
    return None


def protect(bp: Blueprint) -> None:
    """The hooks of every /v1 blueprint, in order: parameters checked, key authenticated, request
    counted against the key's rate limit, ``Idempotency-Key`` honoured."""
    bp.before_request(check_url)
    bp.before_request(authenticate)
    bp.before_request(ratelimit.check)
    idempotency.install(bp)


protect(blueprint)


def _unauthorized(message: str) -> Response:
    response = error_response(401, message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="missions"'
    return response


def json_body(schema: Schema, *, optional: bool = False) -> Any:
    """Parse the request body as JSON and load it through ``schema``; every failure is a clear 400/415."""
    raw = request.get_data(cache=True)  # raises 413 past MAX_CONTENT_LENGTH
    if optional and not raw.strip():
        return schema.load({})
    if request.mimetype != "application/json":
        raise Invalid(
            f"Content-Type must be application/json, got {request.mimetype or 'none'}",
            {"contentType": request.mimetype or None},
        ).with_status(415)
    body = schemas.parse_json(raw)  # no NUL, no NaN, no 1e400, no deep nesting (400 naming the field)
    if not isinstance(body, dict):
        raise Invalid("the request body must be a JSON object", {"fields": {"body": ["expected an object"]}})
    return schema.load(body)


@blueprint.get("/missions")
def list_missions() -> Any:
    query = schemas.LIST_QUERY.load(request.args.to_dict())
    after = cursors.after_from(query, ("time", "str"))
    include = query["include"]
    with services().transaction() as conn:
        rows = missions.list_missions(
            conn,
            g.project_id,
            status=query.get("status"),
            limit=query["limit"],
            offset=query["offset"],
            after=after and (after[0], after[1]),
            name_contains=query.get("q"),
            with_cost="lastRun" in include,
        )
    items = [render.mission_summary(row, include) for row in rows]
    return cursors.page(items, rows, query["limit"], ("created_at", "id"))


@blueprint.post("/missions")
def create_mission() -> Any:
    document = json_body(schemas.MISSION)
    with services().transaction() as conn:
        mission = missions.create_mission(conn, g.project_id, document, limits())
    response = jsonify(render.mission_created(mission))
    response.status_code = 201
    response.headers["Location"] = f"/v1/missions/{mission.id}"
    return response


@blueprint.get("/missions/resumable")
def list_resumable() -> Any:
    include = schemas.RESUMABLE_QUERY.load(request.args.to_dict())["include"]
    with services().transaction() as conn:
        rows = missions.list_resumable(conn, g.project_id, detail="waitingFor" in include)
    return jsonify([render.resumable(row, include) for row in rows])


@blueprint.get("/missions/<mission_id>")
def get_mission(mission_id: str) -> Any:
    with services().transaction() as conn:
        mission = missions.get_mission(conn, g.project_id, mission_id)
        body = render.mission_detail(mission, mission_usage(conn, mission_id))
    return jsonify(body)


@blueprint.patch("/missions/<mission_id>")
def patch_mission(mission_id: str) -> Any:
    changes = json_body(schemas.MISSION_PATCH)
    with services().transaction() as conn:
        mission = missions.patch_mission(conn, g.project_id, mission_id, changes, limits())
        body = render.mission_detail(mission, mission_usage(conn, mission_id))
    return jsonify(body)


@blueprint.delete("/missions/<mission_id>")
def delete_mission(mission_id: str) -> Any:
    with services().transaction() as conn:
        missions.delete_mission(conn, g.project_id, mission_id)
    return "", 204


@blueprint.post("/missions/<mission_id>/tasks")
def add_task(mission_id: str) -> Any:
    document = json_body(schemas.TASK)
    with _task_edit(mission_id, "add_task") as uow:
        mission, task_id, _ = runs.add_task(uow, g.project_id, mission_id, document, limits(), utcnow())
    states = render.task_statuses(mission)
    task = next(t for t in mission.tasks if t.id == task_id)
    response = jsonify(render.task_detail(mission, task, states))
    response.status_code = 201
    return response


@blueprint.patch("/missions/<mission_id>/tasks/<task_id>")
def update_task(mission_id: str, task_id: str) -> Any:
    changes = json_body(schemas.TASK_PATCH)
    with _task_edit(mission_id, "update_task") as uow:
        mission, _ = runs.update_task(uow, g.project_id, mission_id, task_id, changes, limits(), utcnow())
    states = render.task_statuses(mission)
    task = next(t for t in mission.tasks if t.id == task_id)
    return jsonify(render.task_detail(mission, task, states))


@blueprint.delete("/missions/<mission_id>/tasks/<task_id>")
def delete_task(mission_id: str, task_id: str) -> Any:
    with _task_edit(mission_id, "delete_task") as uow:
        runs.delete_task(uow, g.project_id, mission_id, task_id, limits(), utcnow())
    return "", 204


@contextmanager
def _task_edit(mission_id: str, command: str) -> Iterator[UnitOfWork]:
    """The unit of work of a change to the mission's tasks, in the trace of the run it changes
    while one is active or paused (the change joins that run: ``runs.in_run_trace``)."""
    svc = services()
    with (
        runs.in_run_trace(svc.db, g.project_id, mission_id, command, ended_too=False),
        svc.coordinator.transaction() as uow,
    ):
        yield uow


def wants_stream() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/event-stream"])
    return best == "text/event-stream" and "text/event-stream" in request.headers.get("Accept", "")


@blueprint.post("/missions/<mission_id>/execute")
def execute(mission_id: str) -> Any:
    data = json_body(schemas.EXECUTE, optional=True).get("data")
    if wants_stream():
        return open_stream(lambda: _execute(mission_id, data, stream=True))
    return _execute(mission_id, data, stream=False)


def _execute(mission_id: str, data: dict[str, Any] | None, *, stream: bool) -> Response:
    with services().coordinator.transaction() as uow:
        run_id, _, row, usage = runs.execute(uow, g.project_id, mission_id, limits(), utcnow(), data)
    # The run as this request committed it; workers may have moved it on since (GET its Location).
    response = jsonify(render.run(row, usage=usage))
    response.status_code = 202
    response.headers["Location"] = f"/v1/missions/{mission_id}/runs/{run_id}"
    if not stream:
        return response
    # A repeat with the same Idempotency-Key streams this run again (``_replay_execute``).
    kept = {name: response.headers[name] for name in idempotency.KEPT_HEADERS}
    idempotency.store_instead(202, response.get_data(), kept)
    return sse.stream_run(mission_id, run_id, None)


def _replay_execute(stored: Any) -> Response | None:
    """A repeated streamed execute streams the run the first request started, from its start."""
    if stored.status != 202 or not wants_stream():
        return None
    mission_id = (request.view_args or {})["mission_id"]
    run_id = str(idempotency.json_body(stored)["id"])  # type: ignore[index]
    return open_stream(lambda: sse.stream_run(mission_id, run_id, None))


idempotency.replay_with("missions_v1.execute", _replay_execute)


@blueprint.get("/missions/<mission_id>/events")
def events(mission_id: str) -> Any:
    last_event_id = sse.parse_last_event_id(request.headers.get("Last-Event-ID"), request.args.get("lastEventId"))
    page = wants_json()
    if page:
        query = schemas.EVENTS_PAGE_QUERY.load(request.args.to_dict())
        after = cursors.after_from(query, ("id",), instead="lastEventId")
    with services().transaction() as conn:
        run_id = request.args.get("runId")
        if run_id:
            runs.get_run(conn, g.project_id, mission_id, run_id)
        else:
            run_id = runs.latest_run_id(conn, g.project_id, mission_id)
        if page:
            start = after[0] if after else (last_event_id or 0)
            rows = event_log.list_events(conn, run_id, start, query["limit"])
    if page:
        return cursors.page([render.event(row) for row in rows], rows, query["limit"], ("id",))
    return open_stream(lambda: sse.stream_run(mission_id, run_id, last_event_id))


def wants_json() -> bool:
    """Whether the client asked for the JSON page of the events, not the stream (which stays the
    answer to ``*/*`` and to no ``Accept`` at all)."""
    best = request.accept_mimetypes.best_match(["text/event-stream", "application/json"])
    return best == "application/json" and "application/json" in request.headers.get("Accept", "")


def mission_command(mission_id: str, command: str, apply: Callable[[UnitOfWork], object]) -> Any:
    """Apply a command to the mission's run (its unit of work sends what it asks for after commit,
    in the run's trace while tracing is on), answer with the mission as it now stands."""
    svc = services()
    with runs.in_run_trace(svc.db, g.project_id, mission_id, command), svc.coordinator.transaction() as uow:
        apply(uow)
    with svc.transaction() as conn:
        mission = missions.get_mission(conn, g.project_id, mission_id)
        body = render.mission_detail(mission, mission_usage(conn, mission_id))
    return jsonify(body)


@blueprint.post("/missions/<mission_id>/resume")
def resume(mission_id: str) -> Any:
    retry_failed = json_body(schemas.RESUME, optional=True)["retryFailed"]
    return mission_command(
        mission_id, "resume", lambda uow: runs.resume(uow, g.project_id, mission_id, retry_failed, utcnow())
    )


@blueprint.post("/missions/<mission_id>/abort")
def abort(mission_id: str) -> Any:
    return mission_command(mission_id, "abort", lambda uow: runs.abort(uow, g.project_id, mission_id, utcnow()))


@blueprint.get("/missions/<mission_id>/runs")
def list_runs(mission_id: str) -> Any:
    query = schemas.RUN_LIST_QUERY.load(request.args.to_dict())
    after = cursors.after_from(query, ("int",))
    with services().transaction() as conn:
        rows = runs.list_runs(
            conn, g.project_id, mission_id, query["limit"], query["offset"], after[0] if after else None
        )
        ids = [row["id"] for row in rows]
        usage = runs_usage(conn, ids)  # the page's runs, not the mission's history
        summaries = reports.run_summaries(conn, ids) if "summary" in query["include"] else {}
    items = [render.run(row, with_tasks=False, usage=usage, summary=summaries.get(row["id"])) for row in rows]
    return cursors.page(items, rows, query["limit"], ("number",))


@blueprint.get("/missions/<mission_id>/fires")
def list_fires(mission_id: str) -> Any:
    query = schemas.PAGE_QUERY.load(request.args.to_dict())
    after = cursors.after_from(query, ("time",))
    with services().transaction() as conn:
        missions.get_mission(conn, g.project_id, mission_id)
        rows = schedules.list_fires(conn, mission_id, query["limit"], query["offset"], after[0] if after else None)
    return cursors.page([render.fire(row) for row in rows], rows, query["limit"], ("fire_at",))


@blueprint.get("/missions/<mission_id>/runs/<run_id>")
def get_run(mission_id: str, run_id: str) -> Any:
    include = schemas.RUN_QUERY.load(request.args.to_dict())["include"]
    with services().transaction() as conn:
        row = runs.get_run(conn, g.project_id, mission_id, run_id)
        details = reports.run_details(conn, run_id, attempts="attempts" in include, graph="graph" in include)
        body = render.run(row, usage=runs_usage(conn, [run_id]), details=details)  # (not the mission's history)
    return jsonify(body)


@blueprint.get("/missions/<mission_id>/runs/<run_id>/tasks/<task_id>/attempts")
def list_attempts(mission_id: str, run_id: str, task_id: str) -> Any:
    query = schemas.ATTEMPTS_QUERY.load(request.args.to_dict())
    after = cursors.after_from(query, ("int",), instead=None)
    with services().transaction() as conn:
        reports.find_run(conn, g.project_id, mission_id, run_id)
        items = reports.task_attempts(conn, run_id, task_id, after=after[0] if after else 0, limit=query["limit"])
    return cursors.page(items, items, query["limit"], ("attempt",))


@blueprint.get("/missions/<mission_id>/runs/<run_id>/report")
def run_report(mission_id: str, run_id: str) -> Any:
    with services().transaction() as conn:
        reports.find_run(conn, g.project_id, mission_id, run_id)
        body = reports.run_report(conn, run_id)
    if body is None:  # (deleted between the two reads)
        raise NotFound(f"run {run_id} not found in mission {mission_id}")
    return jsonify(body)
