"""What a person reads about a run, in the public API's shapes: the attempts of one of its tasks
(``task_attempts``), its report (``run_report``), its attempts in brief and its graph for a run page
(``run_details``), and the duration and average score of a page of runs (``run_summaries``). The
arithmetic (durations, totals, the average score, escalations) is ``orchestrator.report``; this
module reads the rows, a bounded number of statements whatever the size of the run, and hands
them to it.

``run_report(conn, run_id)`` takes no project: it is also meant for the transaction that ends a
run (the locking step); ``ending_report`` figures the same report before the one statement that
ends a run. A request scopes the run first with ``find_run``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from orchestrator.engine import AttemptStatus, RunState, assessment_passes
from orchestrator.report import AttemptTimes, TaskLine, average_score, escalation, run_summary, seconds_between
from orchestrator.spec import DEFAULT_QUALITY_THRESHOLD, AgentSpec, TaskSpec, format_timestamp
from workers.store import attempts
from workers.store.attempts import Guard
from workers.store.db import Connection
from workers.store.queries import query
from workers.support.errors import NotFound

FIND_RUN = query("find_run")
RUN_TASK_CONTEXT = query("run_task_context")
TASK_ATTEMPTS_PAGE = query("task_attempts_page")
RUN_REPORT = query("run_report")
RUN_TIMELINE = query("run_timeline")
RUN_SPEC_PARTS = query("run_spec_parts")
ATTACH_REPORT_TO_DONE = query("attach_report_to_done")
RUN_SCORES = query("run_scores")


def _ts(value: Any) -> str | None:
    return format_timestamp(value) if value is not None else None


def find_run(conn: Connection, project_id: str, mission_id: str, run_id: str) -> dict[str, Any]:
    """The run ``run_id`` of the project's mission ``mission_id``; ``NotFound`` otherwise (another
    project's run included)."""
    row = conn.execute(FIND_RUN, {"project_id": project_id, "mission_id": mission_id, "run_id": run_id}).fetchone()
    if row is None:
        raise NotFound(f"run {run_id} not found in mission {mission_id}")
    return dict(row)


def task_attempts(conn: Connection, run_id: str, task_id: str, *, after: int, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` attempts of the task in the run numbered above ``after`` (0: from the first),
    oldest first, each with its number as ``attempt`` (the keyset of the next page). ``NotFound``
    for a task the run neither has nor ran."""
    context = conn.execute(RUN_TASK_CONTEXT, {"run_id": run_id, "task_id": task_id}).fetchone()
    if context is None or (context["task"] is None and context["state"] is None and not context["attempted"]):
        raise NotFound(f"task {task_id} not found in run {run_id}")
    task = TaskSpec.from_document(context["task"]) if context["task"] is not None else None
    agents = _agents(context["agents"])
    threshold = context["quality_threshold"]
    threshold = float(threshold) if threshold is not None else DEFAULT_QUALITY_THRESHOLD
    params = {"run_id": run_id, "task_id": task_id, "after": after, "limit": limit}
    return [_attempt(row, task, agents, threshold) for row in conn.execute(TASK_ATTEMPTS_PAGE, params)]


def _attempt_brief(row: Mapping[str, Any], task: TaskSpec | None, agents: Mapping[str, AgentSpec]) -> dict[str, Any]:
    """Who ran an attempt, how it ended, whether it escalated, and its phases: what a timeline
    draws (``row`` has the columns of ``run_timeline``)."""
    status = row["status"]
    assessing = status == AttemptStatus.ASSESSING.value
    assessed = bool(row["assessed"])
    times = AttemptTimes(
        queued_at=row["created_at"],
        started_at=row["claimed_at"],
        assessing_at=row["finished_at"] if assessed or assessing else None,
        finished_at=row["assessed_at"] if assessed else (None if assessing else row["finished_at"]),
    )
    return {
        "attempt": row["attempt"],
        "status": status,
        "agent": row["agent"],
        "model": row["model"],
        "escalation": escalation(task, agents, row["agent"], row["model"]) if task is not None else None,
        "error": row["error"],
        "score": row["score"],
        "queuedAt": _ts(times.queued_at),
        "startedAt": _ts(times.started_at),
        "assessingAt": _ts(times.assessing_at),
        "finishedAt": _ts(times.finished_at),
        **times.phases(),
    }


def _attempt(
    row: Mapping[str, Any], task: TaskSpec | None, agents: Mapping[str, AgentSpec], threshold: float
) -> dict[str, Any]:
    """Everything an attempt row holds that a person debugging it needs."""
    brief = _attempt_brief(row, task, agents)
    judge = {
        "model": row["judge_model"],
        "tokensIn": row["judge_tokens_in"],
        "tokensOut": row["judge_tokens_out"],
        "costUsd": round(float(row["judge_cost_usd"]), 6),
    }
    return {
        **{k: brief[k] for k in ("attempt", "status", "agent", "model")},
        "worker": row["worker"],
        "escalation": brief["escalation"],
        "prompt": row["prompt"],
        "output": row["output"],
        **{k: v for k, v in brief.items() if k not in ("attempt", "status", "agent", "model", "escalation")},
        "lastSentAt": _ts(row["sent_at"]),
        "heartbeatAt": _ts(row["heartbeat_at"]),
        "tokensIn": row["tokens_in"],
        "tokensOut": row["tokens_out"],
        "costUsd": round(float(row["cost_usd"]), 6),
        "judge": judge,
        "usage": {
            "tokensIn": row["tokens_in"] + row["judge_tokens_in"],
            "tokensOut": row["tokens_out"] + row["judge_tokens_out"],
            "costUsd": round(float(row["cost_usd"]) + float(row["judge_cost_usd"]), 6),
        },
        "files": [dict(o) for o in row["outcomes"] or () if isinstance(o, Mapping)],
        "assessment": _assessment(row, threshold) if row["assessment"] is not None else None,
    }


def _assessment(row: Mapping[str, Any], threshold: float) -> dict[str, Any]:
    """The verdict as recorded: per expectation its type, criterion, score, reason and weight."""
    verdict: Mapping[str, Any] = row["assessment"]
    error = verdict.get("error")
    score = row["score"]
    criteria = [
        {
            "type": c.get("type", "criterion"),
            "criterion": c.get("criterion"),
            "score": c.get("score"),
            "reason": c.get("reason"),
            "weight": c.get("weight", 1.0),
        }
        for c in verdict.get("criteria") or ()
        if isinstance(c, Mapping)
    ]
    return {
        "score": score,
        "threshold": threshold,
        "passed": assessment_passes(score, error, threshold),
        "error": error,
        "judge": verdict.get("judge"),
        "criteria": criteria,
    }


def run_report(conn: Connection, run_id: str) -> dict[str, Any] | None:
    """The report of a run (``None`` when there is no such run), in one query: per task (in the
    order of the run's spec) its status, attempts, duration, score, tokens and cost; the run's
    totals and average score (``orchestrator.report.run_summary``)."""
    rows = _report_rows(conn, run_id)
    if not rows:
        return None
    return _report(rows[0], [_line(row) for row in rows if row["task_id"] is not None])


def ending_report(conn: Connection, state: RunState, now: datetime, guard: Guard) -> dict[str, Any] | None:
    """The report the one-statement step that records ``guard`` at ``now`` and ends the run with
    ``state`` will leave (what ``run_report`` reads once it committed), figured before that
    statement, so that its ``mission:done`` carries it. None when it cannot be figured here (a
    guard whose writes ``attempts.usage_after`` does not know, or the attempt is gone): the step
    then takes the lock.

    The read is not locked: the step's statement writes only if the run still holds the version
    this was decided on, so a step of another process in between makes it take the lock instead.
    What the run's state decides (statuses, scores, titles, the run's end) comes from ``state``,
    what the guarded attempt adds from the guard's values over its row as read."""
    task_id, attempt = guard.params["task_id"], guard.params["attempt"]
    rows = _report_rows(conn, state.run_id, task_id, attempt)
    own = next((row for row in rows if row["task_id"] == task_id and row["g_created_at"] is not None), None)
    if own is None:
        return None
    usage = attempts.usage_after(guard, {key[2:]: value for key, value in own.items() if key.startswith("g_")})
    if usage is None:
        return None
    lines: list[TaskLine] = []
    for row in rows:
        if row["task_id"] is None:
            continue
        line = _line(row)
        task = state.tasks.get(line.task_id)
        if task is not None:
            line = replace(line, title=task.title, status=task.status.value, score=task.score)
        lines.append(line.plus(usage) if line.task_id == task_id else line)
    run = {
        **rows[0],
        "status": state.status.value,
        "pause_reason": state.pause_reason.value if state.pause_reason is not None else None,
        "pause_message": state.pause_message,
        "failure_reason": state.failure_reason,
        "finished_at": rows[0]["finished_at"] or now,  # (the statement's coalesce(finished_at, now))
    }
    return _report(run, lines)


def _report_rows(
    conn: Connection, run_id: str, task_id: str | None = None, attempt: int | None = None
) -> list[dict[str, Any]]:
    params = {"run_id": run_id, "task_id": task_id, "attempt": attempt}
    return [dict(r) for r in conn.execute(RUN_REPORT, params).fetchall()]


def _line(row: Mapping[str, Any]) -> TaskLine:
    return TaskLine(
        task_id=row["task_id"],
        title=row["title"],
        status=row["task_status"] or "pending",
        attempts=int(row["attempts"]),
        score=row["score"],
        tokens_in=int(row["tokens_in"]),
        tokens_out=int(row["tokens_out"]),
        cost_usd=float(row["cost_usd"]),
        first_queued_at=row["first_queued_at"],
        last_ended_at=row["last_ended_at"],
        work_seconds=float(row["work_seconds"]),
    )


def _report(run: Mapping[str, Any], lines: list[TaskLine]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "runId": run["id"],
        "missionId": run["mission_id"],
        "number": run["number"],
        "status": run["status"],
    }
    if run["pause_reason"]:
        out["pauseReason"] = run["pause_reason"]
        out["pauseMessage"] = run["pause_message"]
    if run["failure_reason"]:
        out["failureReason"] = run["failure_reason"]
    out["createdAt"] = _ts(run["created_at"])
    out["startedAt"] = _ts(run["started_at"])
    out["finishedAt"] = _ts(run["finished_at"])
    out.update(run_summary(lines, run["started_at"], run["finished_at"], run["now"]))
    out["tasks"] = [line.to_json() for line in lines]
    return out


def _agents(documents: Any) -> dict[str, AgentSpec]:
    return {a.name: a for a in (AgentSpec.from_document(doc) for doc in documents or ())}


def run_details(conn: Connection, run_id: str, *, attempts: bool, graph: bool) -> dict[str, Any]:
    """What a run page adds to the run: with ``attempts``, every attempt in brief (no prompt,
    output or usage) by task id, oldest first (``"attempts"``); with ``graph``, each task's
    ``assignTo`` and ``dependsOn`` by task id (``"tasks"``) and the run's gates and checkpoints with
    their status in it. Two queries at most, whatever the number of tasks."""
    if not attempts and not graph:
        return {}
    context = conn.execute(RUN_SPEC_PARTS, {"run_id": run_id}).fetchone()
    if context is None:
        return {}
    documents = [doc for doc in context["tasks"] or () if isinstance(doc, Mapping) and doc.get("id")]
    out: dict[str, Any] = {}
    if attempts:
        tasks = {doc["id"]: TaskSpec.from_document(doc) for doc in documents}
        agents = _agents(context["agents"])
        by_task: dict[str, list[dict[str, Any]]] = {}
        for row in conn.execute(RUN_TIMELINE, {"run_id": run_id}).fetchall():
            by_task.setdefault(row["task_id"], []).append(_attempt_brief(row, tasks.get(row["task_id"]), agents))
        out["attempts"] = by_task
    if graph:
        state = context["state"] or {}
        out["tasks"] = {
            doc["id"]: {"assignTo": doc.get("assignTo"), "dependsOn": list(doc.get("dependsOn") or ())}
            for doc in documents
        }
        out["qualityGates"] = _with_status(context["gates"], state.get("gates"))
        out["checkpoints"] = _with_status(context["checkpoints"], state.get("checkpoints"))
    return out


def _with_status(documents: Any, statuses: Any) -> list[dict[str, Any]]:
    """Gate or checkpoint documents with their index and their status in the run."""
    known = list(statuses or ())
    return [
        {"index": i, **dict(doc), "status": known[i] if i < len(known) else None}
        for i, doc in enumerate(documents or ())
    ]


def run_summaries(conn: Connection, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per run id: its ``durationSeconds`` (to now while it has not finished), ``averageScore`` and
    ``scoredTasks``, as its report has them, for a page of runs in one query."""
    out: dict[str, dict[str, Any]] = {}
    for row in conn.execute(RUN_SCORES, {"run_ids": list(run_ids)}).fetchall():
        scores = list(row["scores"] or ())
        out[row["id"]] = {
            "durationSeconds": seconds_between(row["started_at"], row["finished_at"] or row["now"]),
            "averageScore": average_score(scores),
            "scoredTasks": len(scores),
        }
    return out


def attach_report_to_done(conn: Connection, run_id: str) -> None:
    """Put the run's report into the ``mission:done`` event the caller's step has just written (and
    into its webhook deliveries), in the caller's transaction: every reader of the event, live or
    later, gets the run as it ended with its per-task figures (DESIGN: the run report)."""
    report = run_report(conn, run_id)
    if report is not None:
        conn.execute(ATTACH_REPORT_TO_DONE, {"run_id": run_id, "report": Jsonb(report)})
