"""Mission documents in Postgres: create, read, change and delete missions and their tasks.

Every write validates the whole resulting document with ``orchestrator.validation`` before it
touches a row, and runs in the caller's transaction, so a rejected request leaves nothing behind.
Every query is scoped to a project: another project's mission is simply not found.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from config import Settings
from orchestrator.engine import RUNNING_MISSION_STATUSES, MissionStatus
from orchestrator.inputs import merge_run_data
from orchestrator.schedule import is_cron, next_fire
from orchestrator.spec import MissionSpec, TaskSpec, parse_timestamp
from orchestrator.validation import Problem, validate_mission
from workers.store.agents import keep_team_agents
from workers.store.queries import query
from workers.support.clock import utcnow
from workers.support.errors import Conflict, Invalid, NotFound
from workers.support.ids import new_id

SELECT_MISSION = query("select_mission")
LOCK_MISSION = query("lock_mission")
SELECT_MISSION_TASKS = query("select_mission_tasks")
SELECT_MISSION_TO_RUN = query("select_mission_to_run")
LIST_MISSIONS = query("list_missions")
LIST_MISSIONS_WITH_STATUS = query("list_missions_with_status")
LIST_MISSIONS_AFTER = query("list_missions_after")
LIST_MISSIONS_WITH_STATUS_AFTER = query("list_missions_with_status_after")
LIST_RESUMABLE = query("list_resumable_missions")
INSERT_MISSION = query("insert_mission")
INSERT_TASK = query("insert_task")
MISSION_NAME_TAKEN = query("mission_name_taken")
UPDATE_MISSION = query("update_mission")
UPDATE_MISSION_DOCUMENT = query("update_mission_document")
TOUCH_MISSION = query("touch_mission")
DELETE_MISSION = query("delete_mission")
UPDATE_TASK = query("update_task")
DELETE_TASK = query("delete_task")
PROJECT_AGENT_NAMES = query("project_agent_names")


@dataclass(frozen=True)
class Limits:
    """Server-side limits applied while validating a document: what the operator allows."""

    max_tasks: int = 10_000
    allow_commands: bool = False
    profiles: Mapping[str, str] = dataclass_field(default_factory=dict)  # provider profile name -> provider
    allow_mission_endpoints: bool = False
    judge_model: str | None = None  # MISSIONS_JUDGE_MODEL: the judge of a mission without an assessor model

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_tasks=settings.max_tasks,
            allow_commands=settings.allow_commands,
            profiles={p.name: p.provider for p in settings.provider_profiles},
            allow_mission_endpoints=settings.allow_mission_endpoints,
            judge_model=settings.judge_model or None,
        )


@dataclass(frozen=True)
class StoredTask:
    id: str
    title: str
    document: dict[str, Any]


@dataclass(frozen=True)
class StoredMission:
    row: dict[str, Any]
    tasks: list[StoredTask]

    @property
    def id(self) -> str:
        return str(self.row["id"])

    @property
    def status(self) -> str:
        return str(self.row["status"])

    @property
    def document(self) -> dict[str, Any]:
        return dict(self.row["document"])

    def full_document(self) -> dict[str, Any]:
        """The mission document with its tasks (each task carrying its id)."""
        doc = self.document
        doc["tasks"] = [{"id": t.id, **t.document} for t in self.tasks]
        return doc

    def spec(self) -> MissionSpec:
        return MissionSpec.from_document(self.full_document())


def end_date(document: Mapping[str, Any]) -> datetime | None:
    value = document.get("endDate")
    return parse_timestamp(value) if value else None


def next_run_at(document: Mapping[str, Any], now: datetime) -> datetime | None:
    """The next fire of the document's schedule after ``now``; ``Invalid`` when it has none left."""
    schedule = document.get("schedule")
    if not schedule:
        return None
    fire = next_fire(schedule, document.get("timezone"), now, end_date(document))
    if fire is None:
        if is_cron(schedule):
            raise Invalid(
                "the schedule has no fire left before endDate",
                {"fields": {"endDate": ["no fire of the schedule falls before this date"]}},
            )
        raise Invalid(
            f'schedule "{schedule}" is in the past; a one-shot schedule needs a future time',
            {"fields": {"schedule": ["in the past"]}},
        )
    return fire


def _next_run_at(document: Mapping[str, Any]) -> datetime | None:
    return next_run_at(document, utcnow())


def _status_for(document: Mapping[str, Any]) -> str:
    return (MissionStatus.SCHEDULED if document.get("schedule") else MissionStatus.DRAFT).value


def raise_problems(problems: list[Problem]) -> None:
    if not problems:
        return
    fields: dict[str, list[str]] = {}
    for problem in problems:
        fields.setdefault(problem.field, []).append(problem.message)
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise Invalid(f"{first.field}: {first.message}{more}", {"fields": fields})


def validate_document(
    conn: psycopg.Connection[Any],
    project_id: str,
    document: Mapping[str, Any],
    limits: Limits,
    known_agents: Collection[str] | None = None,
    now: datetime | None = None,
) -> MissionSpec:
    """Validate a whole mission document against the project (whose agent names the caller may
    already hold); ``Invalid`` names every problem. With ``now`` (a create, or a patch that sets
    the deadline) a deadline must lie after it."""
    spec = MissionSpec.from_document(document)
    known = _project_agents(conn, project_id) if known_agents is None else known_agents
    problems = validate_mission(
        spec,
        known_agents=known,
        allow_commands=limits.allow_commands,
        max_tasks=limits.max_tasks,
        profiles=limits.profiles,
        allow_mission_endpoints=limits.allow_mission_endpoints,
        judge_model=limits.judge_model,
        now=now,
    )
    if document.get("scheduleData") is not None:
        try:
            merge_run_data(document.get("data"), document["scheduleData"])
        except ValueError as exc:
            problems = [*problems, Problem("scheduleData", str(exc))]
    raise_problems(problems)
    return spec


def _project_agents(conn: psycopg.Connection[Any], project_id: str) -> Collection[str]:
    return {row["name"] for row in conn.execute(PROJECT_AGENT_NAMES, {"project_id": project_id})}


def _split(document: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    mission = {k: v for k, v in document.items() if k != "tasks"}
    tasks = [{k: v for k, v in task.items() if k != "id"} for task in document.get("tasks") or ()]
    return mission, tasks


def create_mission(
    conn: psycopg.Connection[Any], project_id: str, document: Mapping[str, Any], limits: Limits
) -> StoredMission:
    """Validate and insert a mission with its tasks; ``Conflict`` when the name is taken."""
    validate_document(conn, project_id, document, limits, now=utcnow())
    mission_doc, task_docs = _split(document)
    first_fire = _next_run_at(mission_doc)
    mission_id = new_id("msn")
    inserted = conn.execute(
        INSERT_MISSION,
        {
            "id": mission_id,
            "project_id": project_id,
            "name": mission_doc["name"],
            "status": _status_for(mission_doc),
            "document": Jsonb(mission_doc),
            "next_run_at": first_fire,
        },
    ).fetchone()
    if inserted is None:
        raise Conflict(
            f'a mission named "{mission_doc["name"]}" already exists in this project',
            {"fields": {"name": ["already used by another mission in this project"]}},
        )
    _insert_tasks(conn, mission_id, task_docs, start=0)
    keep_team_agents(conn, project_id, mission_doc)
    return get_mission(conn, project_id, mission_id)


def _insert_tasks(
    conn: psycopg.Connection[Any], mission_id: str, task_docs: Iterable[Mapping[str, Any]], start: int
) -> list[str]:
    rows = [
        {
            "id": new_id("task"),
            "mission_id": mission_id,
            "position": start + i,
            "title": doc["title"],
            "document": Jsonb(dict(doc)),
        }
        for i, doc in enumerate(task_docs)
    ]
    with conn.cursor() as cur:
        cur.executemany(INSERT_TASK, rows)
    return [row["id"] for row in rows]


def get_mission(
    conn: psycopg.Connection[Any], project_id: str, mission_id: str, *, for_update: bool = False
) -> StoredMission:
    statement = LOCK_MISSION if for_update else SELECT_MISSION
    row = conn.execute(statement, {"project_id": project_id, "mission_id": mission_id}).fetchone()
    if row is None:
        raise NotFound(f"mission {mission_id} not found")
    tasks = [
        StoredTask(id=t["id"], title=t["title"], document=dict(t["document"]))
        for t in conn.execute(SELECT_MISSION_TASKS, {"mission_id": mission_id})
    ]
    return StoredMission(row=dict(row), tasks=tasks)


def mission_to_run(
    conn: psycopg.Connection[Any], project_id: str, mission_id: str
) -> tuple[StoredMission, frozenset[str]]:
    """The mission, locked for a new run, and the names of its project's agents."""
    row = conn.execute(SELECT_MISSION_TO_RUN, {"project_id": project_id, "mission_id": mission_id}).fetchone()
    if row is None:
        raise NotFound(f"mission {mission_id} not found")
    fields = dict(row)
    tasks = [StoredTask(id=t["id"], title=t["title"], document=dict(t["document"])) for t in fields.pop("tasks")]
    return StoredMission(row=fields, tasks=tasks), frozenset(fields.pop("project_agents"))


def name_pattern(text: str | None) -> str | None:
    """An ILIKE pattern matching names that contain ``text`` as written (its ``%``, ``_`` and
    ``\\`` escaped); None for no text (any name)."""
    if not text:
        return None
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def list_missions(
    conn: psycopg.Connection[Any],
    project_id: str,
    *,
    status: str | None,
    limit: int,
    offset: int = 0,
    after: tuple[datetime, str] | None = None,
    name_contains: str | None = None,
    with_cost: bool = False,
) -> list[dict[str, Any]]:
    """A page of the project's missions, oldest first, with their latest run: ``offset`` rows in,
    or (keyset) those after the ``(created_at, id)`` of the last mission of the previous page;
    ``with_cost`` adds what that run spent (``run_cost_usd``), a sum over its attempts."""
    params: dict[str, Any] = {
        "project_id": project_id,
        "status": status,
        "name_like": name_pattern(name_contains),
        "with_cost": with_cost,
        "limit": limit,
        "offset": offset,
    }
    if after is None:
        statement = LIST_MISSIONS if status is None else LIST_MISSIONS_WITH_STATUS
    else:
        params["created_at"], params["id"] = after
        statement = LIST_MISSIONS_AFTER if status is None else LIST_MISSIONS_WITH_STATUS_AFTER
    return [dict(row) for row in conn.execute(statement, params)]


def list_resumable(conn: psycopg.Connection[Any], project_id: str, *, detail: bool = False) -> list[dict[str, Any]]:
    """The project's paused missions; ``detail`` adds what each waits for (see the query)."""
    return [dict(row) for row in conn.execute(LIST_RESUMABLE, {"project_id": project_id, "detail": detail})]


def _ensure_not_running(mission: StoredMission, action: str) -> None:
    if mission.status in RUNNING_MISSION_STATUSES:  # the mission's run owns the document
        raise Conflict(f"cannot {action} while the mission is {mission.status}; abort it first")


def patch_mission(
    conn: psycopg.Connection[Any], project_id: str, mission_id: str, changes: Mapping[str, Any], limits: Limits
) -> StoredMission:
    """Apply only the given fields (``None`` clears an optional one) and re-validate the whole document."""
    mission = get_mission(conn, project_id, mission_id, for_update=True)
    _ensure_not_running(mission, "change a mission")
    merged = mission.document
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    full = {**merged, "tasks": [{"id": t.id, **t.document} for t in mission.tasks]}
    validate_document(conn, project_id, full, limits, now=utcnow() if "deadline" in changes else None)
    if merged["name"] != mission.row["name"]:
        taken = conn.execute(
            MISSION_NAME_TAKEN, {"project_id": project_id, "name": merged["name"], "mission_id": mission_id}
        ).fetchone()
        if taken:
            raise Conflict(
                f'a mission named "{merged["name"]}" already exists in this project',
                {"fields": {"name": ["already used by another mission in this project"]}},
            )
    status = mission.status
    next_run = mission.row["next_run_at"]
    if {"schedule", "timezone", "endDate"} & changes.keys():
        next_run = _next_run_at(merged)
        if merged.get("schedule"):
            status = MissionStatus.SCHEDULED.value
        elif status == MissionStatus.SCHEDULED:
            status = MissionStatus.DRAFT.value
    conn.execute(
        UPDATE_MISSION,
        {
            "name": merged["name"],
            "document": Jsonb(merged),
            "status": status,
            "next_run_at": next_run,
            "mission_id": mission_id,
        },
    )
    if "team" in changes:  # (an unchanged team was checked when it was set)
        keep_team_agents(conn, project_id, merged)
    return get_mission(conn, project_id, mission_id)


def delete_mission(conn: psycopg.Connection[Any], project_id: str, mission_id: str) -> None:
    mission = get_mission(conn, project_id, mission_id, for_update=True)
    _ensure_not_running(mission, "delete a mission")
    conn.execute(DELETE_MISSION, {"mission_id": mission_id})


def _task_index(mission: StoredMission, task_id: str) -> int:
    for index, task in enumerate(mission.tasks):
        if task.id == task_id:
            return index
    raise NotFound(f"task {task_id} not found in mission {mission.id}")


def add_task(
    conn: psycopg.Connection[Any], project_id: str, mission_id: str, task_doc: Mapping[str, Any], limits: Limits
) -> tuple[StoredMission, str]:
    """Append a task to the mission document; returns the mission and the new task id. While the
    mission runs, the caller also feeds the task to the run (``workers.coordination.runs``)."""
    mission = get_mission(conn, project_id, mission_id, for_update=True)
    full = mission.full_document()
    full["tasks"].append(dict(task_doc))
    validate_document(conn, project_id, full, limits)
    tasks = conn.execute(SELECT_MISSION_TASKS, {"mission_id": mission_id})
    position = max((t["position"] for t in tasks), default=-1) + 1
    (task_id,) = _insert_tasks(conn, mission_id, [task_doc], start=position)
    conn.execute(TOUCH_MISSION, {"mission_id": mission_id})
    return get_mission(conn, project_id, mission_id), task_id


def update_task(
    conn: psycopg.Connection[Any],
    project_id: str,
    mission_id: str,
    task_id: str,
    changes: Mapping[str, Any],
    limits: Limits,
) -> StoredMission:
    mission = get_mission(conn, project_id, mission_id, for_update=True)
    index = _task_index(mission, task_id)
    full = mission.full_document()
    task = full["tasks"][index]
    old_title = task["title"]
    for key, value in changes.items():
        if value is None:
            task.pop(key, None)
        else:
            task[key] = value
    if task["title"] != old_title:
        _rename_references(full, old_title, task["title"])
    validate_document(conn, project_id, full, limits)
    _write_tasks(conn, mission_id, full)
    return get_mission(conn, project_id, mission_id)


def _rename_references(document: dict[str, Any], old: str, new: str) -> None:
    """A renamed task keeps its place in every dependsOn, gate and checkpoint."""

    def swap(titles: list[str]) -> list[str]:
        return [new if title == old else title for title in titles]

    for task in document["tasks"]:
        if task.get("dependsOn"):
            task["dependsOn"] = swap(task["dependsOn"])
    for key in ("qualityGates", "checkpoints"):
        for item in document.get(key) or ():
            for field in ("afterTasks", "blocksTasks"):
                if item.get(field):
                    item[field] = swap(item[field])


def _write_tasks(conn: psycopg.Connection[Any], mission_id: str, full: Mapping[str, Any]) -> None:
    mission_doc, _ = _split(full)
    with conn.cursor() as cur:
        cur.executemany(
            UPDATE_TASK,
            [
                {
                    "id": t["id"],
                    "mission_id": mission_id,
                    "title": t["title"],
                    "document": Jsonb({k: v for k, v in t.items() if k != "id"}),
                }
                for t in full["tasks"]
            ],
        )
    conn.execute(UPDATE_MISSION_DOCUMENT, {"document": Jsonb(mission_doc), "mission_id": mission_id})


def delete_task(
    conn: psycopg.Connection[Any], project_id: str, mission_id: str, task_id: str, limits: Limits
) -> StoredMission:
    """Remove a task; refused when it is the last one or when other parts of the mission still name it."""
    mission = get_mission(conn, project_id, mission_id, for_update=True)
    index = _task_index(mission, task_id)
    if len(mission.tasks) == 1:
        raise Conflict("cannot delete the last task of a mission; delete the mission instead")
    full = mission.full_document()
    title = full["tasks"][index]["title"]
    references = _references_to(full, title)
    full["tasks"].pop(index)
    if references:
        names = sorted({who for who, _ in references.values()})
        raise Conflict(
            f'task "{title}" is still referenced by {", ".join(names)}; remove those references first',
            {"fields": {path: [f'refers to "{title}" ({what})'] for path, (_, what) in references.items()}},
        )
    # A backstop: the remaining document must still be valid on its own.
    spec = MissionSpec.from_document(full)
    problems = validate_mission(
        spec,
        known_agents=_project_agents(conn, project_id),
        allow_commands=limits.allow_commands,
        max_tasks=limits.max_tasks,
        judge_model=limits.judge_model,
    )
    if problems:
        fields: dict[str, list[str]] = {}
        for p in problems:
            fields.setdefault(p.field, []).append(p.message)
        raise Conflict(f'removing task "{title}" would leave the mission invalid: {problems[0]}', {"fields": fields})
    conn.execute(DELETE_TASK, {"task_id": task_id, "mission_id": mission_id})
    conn.execute(TOUCH_MISSION, {"mission_id": mission_id})
    return get_mission(conn, project_id, mission_id)


def _references_to(document: Mapping[str, Any], title: str) -> dict[str, tuple[str, str]]:
    """Every place of the stored document that names ``title``, with who holds it and how:
    ``{"tasks[1].dependsOn[0]": ('"Deploy"', "dependsOn")}``."""
    found: dict[str, tuple[str, str]] = {}
    for i, task in enumerate(document["tasks"]):
        for j, dep in enumerate(task.get("dependsOn") or ()):
            if dep == title:
                found[f"tasks[{i}].dependsOn[{j}]"] = (f'"{task["title"]}"', "dependsOn")
    for key, noun in (("qualityGates", "quality gate"), ("checkpoints", "checkpoint")):
        for i, item in enumerate(document.get(key) or ()):
            for field in ("afterTasks", "blocksTasks"):
                for j, name in enumerate(item.get(field) or ()):
                    if name == title:
                        label = item.get("name") or f"{key}[{i}]"
                        found[f"{key}[{i}].{field}[{j}]"] = (f"{noun} {label}", field)
    return found


def task_spec(mission: StoredMission, task_id: str) -> TaskSpec:
    return mission.spec().tasks[_task_index(mission, task_id)]
