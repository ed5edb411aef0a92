"""JSON representations of missions and tasks, in the public API's shapes (camelCase)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from orchestrator.engine import RUNNING_MISSION_STATUSES, MissionStatus, TaskStatus
from orchestrator.report import waiting_for
from orchestrator.spec import DEFAULT_QUALITY_THRESHOLD, format_timestamp
from workers.store.missions import StoredMission, StoredTask
from workers.store.usage import MissionUsage
from workers.support.clock import utcnow


def _ts(value: datetime | None) -> str | None:
    return format_timestamp(value) if value is not None else None


def quality_threshold(document: Mapping[str, Any]) -> float:
    value = document.get("qualityThreshold")
    return float(value) if value is not None else DEFAULT_QUALITY_THRESHOLD


def mission_summary(row: Mapping[str, Any], include: Collection[str] = ()) -> dict[str, Any]:
    """A list item, in the public docs' shape; ``include`` adds ``lastRun`` (the latest run: id,
    number, status, start, end and cost; null before the first) and ``nextRunAt`` (null without a
    schedule)."""
    threshold = row.get("quality_threshold")
    out: dict[str, Any] = {
        "id": row["id"],
        "name": row["name"],
        "status": row["status"],
        "executionCount": row["execution_count"],
        "qualityThreshold": float(threshold) if threshold is not None else DEFAULT_QUALITY_THRESHOLD,
        "taskCount": row["task_count"],
    }
    if "lastRun" in include:
        out["lastRun"] = None
        if row.get("run_id"):
            cost = row.get("run_cost_usd")
            out["lastRun"] = {
                "id": row["run_id"],
                "number": row["run_number"],
                "status": row["run_status"],
                "startedAt": _ts(row["run_started_at"]),
                "finishedAt": _ts(row["run_finished_at"]),
                "costUsd": round(float(cost), 6) if cost is not None else 0.0,
            }
    if "nextRunAt" in include:
        out["nextRunAt"] = _ts(row.get("next_run_at"))
    return out


def task_statuses(mission: StoredMission) -> dict[str, Mapping[str, Any]]:
    """Per task id, the state the latest run holds for it (empty before the first run)."""
    return _run_tasks(mission.row.get("run_tasks"))


def _run_tasks(tasks: Any) -> dict[str, Mapping[str, Any]]:
    """Task states of a run (a list of ``TaskState`` JSON documents), by task id."""
    return {t["taskId"]: t for t in tasks} if isinstance(tasks, list) else {}


def _task_status(mission: StoredMission, task: StoredTask, states: Mapping[str, Mapping[str, Any]]) -> str:
    state = states.get(task.id)
    if state is not None:
        return str(state.get("status", TaskStatus.PENDING.value))
    return (TaskStatus.PENDING if mission.status in RUNNING_MISSION_STATUSES else TaskStatus.DRAFT).value


def task_brief(mission: StoredMission, task: StoredTask, states: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": task.id,
        "title": task.title,
        "assignTo": task.document["assignTo"],
        "status": _task_status(mission, task, states),
    }
    if task.document.get("dependsOn"):
        out["dependsOn"] = list(task.document["dependsOn"])
    return out


def task_detail(
    mission: StoredMission, task: StoredTask, states: Mapping[str, Mapping[str, Any]], usage: MissionUsage | None = None
) -> dict[str, Any]:
    out = {"id": task.id, **task.document, "status": _task_status(mission, task, states)}
    state = states.get(task.id)
    if state is not None:
        out.update(_task_results(state))
    run_id = mission.row.get("latest_run_id")
    if usage is not None and run_id and state is not None:
        out["usage"] = usage.task(run_id, task.id).to_json()
    return out


def _task_results(state: Mapping[str, Any]) -> dict[str, Any]:
    """What the latest attempt of a task produced: who ran it, its output, score and reasons."""
    out: dict[str, Any] = {}
    for key in ("attempt", "agent", "model", "output", "score", "criteria", "error"):
        value = state.get(key)
        if value is not None and value != []:
            out[key] = value
    return out


def _run_fields(mission: StoredMission) -> dict[str, Any]:
    row = mission.row
    out: dict[str, Any] = {}
    if row.get("latest_run_id"):
        out["latestRunId"] = row["latest_run_id"]
    if mission.status == MissionStatus.PAUSED:
        out["pauseReason"] = row.get("pause_reason")
        out["pauseMessage"] = row.get("pause_message")
    if row.get("failure_reason") and mission.status in (MissionStatus.FAILED, MissionStatus.CANCELLED):
        out["failureReason"] = row["failure_reason"]
    if row.get("next_run_at") is not None:
        out["nextRunAt"] = _ts(row["next_run_at"])
    if row.get("run_status"):
        out["lastRunStatus"] = row["run_status"]
    return out


def _head(mission: StoredMission, doc: Mapping[str, Any]) -> dict[str, Any]:
    """The fields every mission representation starts with, in the public docs' order."""
    out: dict[str, Any] = {"id": mission.id, "name": doc["name"], "status": mission.status}
    if doc.get("prompt") is not None:
        out["prompt"] = doc["prompt"]
    out["qualityThreshold"] = quality_threshold(doc)
    out["executionCount"] = mission.row["execution_count"]
    return out


def mission_created(mission: StoredMission) -> dict[str, Any]:
    """The create answer, as the public docs show it: the mission head and a brief of each task."""
    doc = mission.document
    states = task_statuses(mission)
    out = _head(mission, doc)
    for key in ("deadline", "schedule", "timezone"):
        if doc.get(key) is not None:
            out[key] = doc[key]
    out.update(_run_fields(mission))
    out["tasks"] = [task_brief(mission, t, states) for t in mission.tasks]
    return out


def mission_detail(mission: StoredMission, usage: MissionUsage | None = None) -> dict[str, Any]:
    """The whole mission: every field of its document, its run status and every task in full,
    with tokens and cost over all runs (``usage``) and per task in the latest run."""
    doc = mission.document
    states = task_statuses(mission)
    out = _head(mission, doc)
    for key, value in doc.items():
        if key not in out and key != "name":
            out[key] = value
    out.update(_run_fields(mission))
    out["createdAt"] = _ts(mission.row["created_at"])
    out["updatedAt"] = _ts(mission.row["updated_at"])
    if usage is not None:
        out["usage"] = usage.total.to_json()
    out["tasks"] = [task_detail(mission, t, states, usage) for t in mission.tasks]
    return out


def resumable(row: Mapping[str, Any], include: Collection[str] = ()) -> dict[str, Any]:
    """A paused mission, in the public docs' shape; ``include`` adds ``waitingFor``: its paused run
    (``runId``, ``runNumber``), since when it waits (``pausedAt``) and each cause of the pause
    (``orchestrator.report.waiting_for``)."""
    out: dict[str, Any] = {
        "id": row["id"],
        "name": row["name"],
        "status": row["status"],
        "pauseReason": row["pause_reason"],
        "pauseMessage": row["pause_message"],
    }
    if "waitingFor" in include:
        out["runId"] = row["run_id"]
        out["runNumber"] = row["run_number"]
        out["pausedAt"] = _ts(row["paused_at"])
        out["waitingFor"] = waiting_for(
            row["run_state"] or {}, row["gates"] or [], row["checkpoints"] or [], row["tasks"] or []
        )
    return out


def run(
    row: Mapping[str, Any],
    *,
    with_tasks: bool = True,
    usage: MissionUsage | None = None,
    details: Mapping[str, Any] | None = None,
    summary: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A run: its status, why it paused or failed, tokens and cost, and (by default) every task's
    state in it with its output, score and the judge's reasons. ``details``
    (``workers.store.reports.run_details``) adds each task's ``attempts`` in brief, and/or its
    ``assignTo`` and ``dependsOn`` with the run's ``qualityGates`` and ``checkpoints``; ``summary``
    (``workers.store.reports.run_summaries``) its duration and average score."""
    details = details or {}
    out: dict[str, Any] = {
        "id": row["id"],
        "missionId": row["mission_id"],
        "number": row["number"],
        "status": row["status"],
    }
    if row.get("pause_reason"):
        out["pauseReason"] = row["pause_reason"]
        out["pauseMessage"] = row.get("pause_message")
    if row.get("failure_reason"):
        out["failureReason"] = row["failure_reason"]
    out["createdAt"] = _ts(row.get("created_at"))
    out["startedAt"] = _ts(row.get("started_at"))
    out["finishedAt"] = _ts(row.get("finished_at"))
    if row.get("input") is not None:
        out["data"] = row["input"]  # the run's own data, as given (merged over the mission's for this run)
    if usage is not None:
        out["usage"] = usage.run(row["id"]).to_json()
    if summary is not None:
        out.update(summary)
    if with_tasks:
        out["reviews"] = list(row.get("reviews") or ())
        states = row.get("delays") or ()
        out["delays"] = [{**spec, **state} for spec, state in zip(row.get("delay_specs") or (), states, strict=False)]
        tasks = []
        for task_id, state in _run_tasks(row.get("run_tasks")).items():
            item: dict[str, Any] = {"id": task_id, "title": state.get("title"), "status": state.get("status")}
            item.update(_task_results(state))
            if usage is not None:
                item["usage"] = usage.task(row["id"], task_id).to_json()
            if "tasks" in details:
                item.update(details["tasks"].get(task_id, {"assignTo": None, "dependsOn": []}))
            if "attempts" in details:
                item["attempts"] = details["attempts"].get(task_id, [])
            tasks.append(item)
        out["tasks"] = tasks
    for key in ("qualityGates", "checkpoints"):
        if key in details:
            out[key] = details[key]
    return out


def event(row: Mapping[str, Any]) -> dict[str, Any]:
    """One event of a run's log, as the JSON list shows it (the stream sends the same id, type and data)."""
    return {"id": row["id"], "type": row["type"], "data": row["data"], "createdAt": _ts(row["created_at"])}


def fire(row: Mapping[str, Any]) -> dict[str, Any]:
    """One fire of a mission's schedule: started (with its run) or skipped (with why)."""
    out: dict[str, Any] = {"fireAt": _ts(row["fire_at"]), "status": row["status"]}
    if row.get("reason"):
        out["reason"] = row["reason"]
    if row.get("run_id"):
        out["runId"] = row["run_id"]
    out["recordedAt"] = _ts(row["recorded_at"])
    return out


def webhook(row: Mapping[str, Any], secret: str | None = None) -> dict[str, Any]:
    """A webhook; ``secret`` only in the answer that created or rotated it (never again)."""
    out: dict[str, Any] = {
        "id": row["id"],
        "url": row["url"],
        "events": list(row["events"]),
        "missionIds": list(row["mission_ids"]) if row["mission_ids"] is not None else None,
        "enabled": row["enabled"],
        "description": row["description"],
        "createdAt": _ts(row["created_at"]),
        "updatedAt": _ts(row["updated_at"]),
    }
    if secret is not None:
        out["secret"] = secret
    until = row.get("previous_secret_until")
    if until is not None and until > utcnow():
        out["previousSecretExpiresAt"] = _ts(until)
    return out


def delivery(row: Mapping[str, Any]) -> dict[str, Any]:
    """A webhook delivery with every attempt (status code, response excerpt or error)."""
    return {
        "id": row["id"],
        "eventId": row["event_id"],
        "type": row["type"],
        "missionId": row["mission_id"],
        "runId": row["run_id"],
        "status": row["status"],
        "attemptCount": row["attempts"],
        "nextAttemptAt": _ts(row["next_attempt_at"]) if row["status"] == "pending" else None,
        "createdAt": _ts(row["created_at"]),
        "finishedAt": _ts(row["finished_at"]),
        "attempts": [
            {
                "attempt": a["attempt"],
                "startedAt": a["startedAt"],
                "durationMs": a["durationMs"],
                "statusCode": a["statusCode"],
                "response": a["response"],
                "error": a["error"],
            }
            for a in row["attempt_list"]
        ],
    }


def api_key(row: Mapping[str, Any]) -> dict[str, Any]:
    """A key as listed: never its secret (only its digest is stored)."""
    return {
        "id": row["id"],
        "prefix": row["prefix"],
        "name": row["name"],
        "createdAt": _ts(row["created_at"]),
        "lastUsedAt": _ts(row["last_used_at"]),
        "revoked": row["revoked_at"] is not None,
        "revokedAt": _ts(row["revoked_at"]),
    }


def agent(row: Mapping[str, Any]) -> dict[str, Any]:
    """A reusable agent: its configuration as stored, and when it last changed."""
    return {**row["document"], "name": row["name"], "updatedAt": _ts(row["updated_at"])}
