"""OpenAPI 3.1 for the whole HTTP surface, built from the app's own routes and marshmallow schemas.

The paths come from Flask's URL map, so a route cannot exist without appearing here: ``DOCS`` holds
the documentation of each endpoint (keyed by endpoint name and method), request bodies and query
parameters are the very marshmallow schemas the routes load with (``api.http.schemas``), and response
bodies are described by the documentation-only schemas below, which extend them. An endpoint
missing from ``DOCS`` appears as ``x-undocumented`` (and ``build_spec(strict=True)``, used by the
tests, refuses it).

``/v1/openapi.json`` serves the spec; ``/docs`` is a self-contained HTML reference rendered from it
on the server (no CDN, no JavaScript framework), with a small "try it" form per operation.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, Response, current_app, jsonify
from marshmallow import EXCLUDE, Schema, fields, validate

from api.http import schemas
from api.http.agents import AGENT_PUT
from api.http.keys import KEY_CREATE
from api.http.limits import LIMIT_REQUEST_FIELD_SIZE, LIMIT_REQUEST_FIELDS, LIMIT_REQUEST_LINE
from api.http.routes import PARAM_NAMES
from api.http.webhook_schemas import DELIVERIES_QUERY, WEBHOOK, WEBHOOK_PATCH
from orchestrator.engine import AttemptStatus, MissionStatus, TaskStatus
from orchestrator.failures import NON_RETRYABLE, ErrorCode
from orchestrator.webhooks import EVENT_NAMES as WEBHOOK_EVENT_NAMES

TITLE = "Missions API"
MISSION_STATUSES = [s.value for s in MissionStatus]
TASK_STATUSES = [s.value for s in TaskStatus]
PAUSE_REASONS = ["checkpoint", "quality_gate", "approval"]
ERROR_CODES = ["bad_request", "unauthorized", "not_found", "conflict", "rate_limited", "unavailable", "internal_error"]
EVENT_NAMES = list(WEBHOOK_EVENT_NAMES)  # the SSE event names


# -- Response schemas (documentation only: responses are rendered by api.http.render) ---------------
class _Out(Schema):
    class Meta:
        unknown = EXCLUDE


def _nullable_text(description: str) -> fields.String:
    return fields.String(allow_none=True, metadata={"description": description})


def _seconds(description: str) -> fields.Float:
    return fields.Float(allow_none=True, metadata={"description": description})


def _time(description: str) -> fields.String:
    return fields.String(allow_none=True, metadata={"format": "date-time", "description": description})


class ErrorSchema(_Out):
    error = fields.String(required=True, metadata={"description": "Human readable message."})
    code = fields.String(required=True, validate=validate.OneOf(ERROR_CODES))
    details = fields.Dict(
        required=True,
        metadata={
            "description": "Machine readable details; a validation error lists every offending field in "
            '`details.fields`, e.g. `{"tasks[1].dependsOn[0]": ["..."]}`.'
        },
    )


class UsageSchema(_Out):
    tokensIn = fields.Integer(required=True)
    tokensOut = fields.Integer(required=True)
    costUsd = fields.Float(required=True, metadata={"description": "Estimated from the price table."})
    attempts = fields.Integer(required=True)


class _TaskResults(_Out):
    """What the latest attempt of a task produced."""

    attempt = fields.Integer(metadata={"description": "The current or last attempt (1 based)."})
    agent = fields.String(metadata={"description": "The agent of that attempt (a fallback agent after escalation)."})
    model = fields.String()
    output = fields.String(metadata={"description": "What the agent produced."})
    score = fields.Float(allow_none=True, metadata={"description": "Assessment score 1-5, when assessed."})
    criteria = fields.List(
        fields.Dict(), metadata={"description": "Per expectation: its score and the judge's (or the check's) reason."}
    )
    error = fields.String(metadata={"description": "Why the last attempt failed."})
    usage = fields.Nested(UsageSchema, metadata={"description": "Tokens and cost of the task in the latest run."})


class MissionSummarySchema(_Out):
    id = fields.String(required=True, metadata={"example": "msn_4h2k9x7q0c1v2b3n4m5l6k7j"})
    name = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(MISSION_STATUSES))
    executionCount = fields.Integer(required=True, metadata={"description": "How many runs the mission had."})
    qualityThreshold = fields.Float(required=True)
    taskCount = fields.Integer(required=True)
    lastRun = fields.Nested(
        "LastRunSchema",
        allow_none=True,
        metadata={"description": "With `include=lastRun`: the latest run, null before the first."},
    )
    nextRunAt = fields.String(
        allow_none=True,
        metadata={"format": "date-time", "description": "With `include=nextRunAt`: the next fire, null without one."},
    )


class LastRunSchema(_Out):
    id = fields.String(required=True)
    number = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(MISSION_STATUSES))
    startedAt = fields.String(allow_none=True, metadata={"format": "date-time"})
    finishedAt = fields.String(allow_none=True, metadata={"format": "date-time"})
    costUsd = fields.Float(required=True, metadata={"description": "Agents and judges of that run."})


class _RunFields(_Out):
    latestRunId = fields.String(metadata={"description": "The latest run, once the mission ran."})
    pauseReason = fields.String(
        allow_none=True, validate=validate.OneOf([*PAUSE_REASONS, None]), metadata={"description": "While paused: why."}
    )
    pauseMessage = _nullable_text("While paused: the checkpoint's message or what blocked.")
    failureReason = fields.String(metadata={"description": "When failed or cancelled, e.g. `deadline_exceeded`."})
    nextRunAt = fields.String(metadata={"format": "date-time", "description": "Next scheduled fire."})
    lastRunStatus = fields.String(metadata={"description": "The latest run's own status."})


class TaskBriefSchema(_Out):
    id = fields.String(required=True, metadata={"example": "task_9f8e7d6c5b4a3210fedcba98"})
    title = fields.String(required=True)
    assignTo = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(TASK_STATUSES))
    dependsOn = fields.List(fields.String())


class MissionCreatedSchema(_RunFields):
    id = fields.String(required=True)
    name = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(MISSION_STATUSES))
    prompt = fields.String()
    qualityThreshold = fields.Float(required=True)
    executionCount = fields.Integer(required=True)
    deadline = fields.String(metadata={"format": "date-time"})
    schedule = fields.String()
    timezone = fields.String()
    tasks = fields.List(fields.Nested(TaskBriefSchema), required=True)


class TaskDetailSchema(schemas.TaskSchema, _TaskResults):
    """A task as stored, with its state in the latest run."""

    class Meta:
        unknown = EXCLUDE

    id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(TASK_STATUSES))


class MissionDetailSchema(schemas.MissionSchema, _RunFields):
    """The whole mission document with its status and every task."""

    class Meta:
        unknown = EXCLUDE

    id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(MISSION_STATUSES))
    executionCount = fields.Integer(required=True)
    createdAt = fields.String(required=True, metadata={"format": "date-time"})
    updatedAt = fields.String(required=True, metadata={"format": "date-time"})
    usage = fields.Nested(UsageSchema, metadata={"description": "Tokens and cost over every run."})
    tasks = fields.List(fields.Nested(TaskDetailSchema), required=True)


class ResumableSchema(_Out):
    id = fields.String(required=True)
    name = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf([MissionStatus.PAUSED.value]))
    pauseReason = fields.String(required=True, validate=validate.OneOf(PAUSE_REASONS))
    pauseMessage = fields.String(required=True, allow_none=True)
    runId = fields.String(metadata={"description": "With `include=waitingFor`: the paused run."})
    runNumber = fields.Integer(metadata={"description": "With `include=waitingFor`."})
    pausedAt = fields.String(
        allow_none=True,
        metadata={"format": "date-time", "description": "With `include=waitingFor`: since when it waits for a person."},
    )
    waitingFor = fields.List(
        fields.Nested("WaitingForSchema"),
        metadata={"description": "With `include=waitingFor`: every cause of the pause; one resume settles them all."},
    )


class WaitingForSchema(_Out):
    kind = fields.String(required=True, validate=validate.OneOf(PAUSE_REASONS))
    index = fields.Integer(metadata={"description": "Gates and checkpoints: its position in the mission's list."})
    name = _nullable_text("Gates and checkpoints: its name, when it has one.")
    message = fields.String(metadata={"description": "A checkpoint's message."})
    minScore = fields.Float(allow_none=True, metadata={"description": "A gate's `minScore`."})
    requireAllPassed = fields.Boolean(metadata={"description": "A gate's `requireAllPassed`."})
    score = fields.Float(
        allow_none=True,
        metadata={"description": "A gate: the mean score of its scored afterTasks (null: none scored)."},
    )
    afterTasks = fields.List(
        fields.Raw(),
        metadata={"description": "A gate: each afterTask with its status and score; a checkpoint: their titles."},
    )
    blocksTasks = fields.List(fields.String(), metadata={"description": "The titles it holds back."})
    task = fields.Dict(metadata={"description": "An approval: the task awaiting it (`id`, `title`, `attempt`)."})
    reason = _nullable_text("An approval: why the task waits (its worker was lost mid-run).")


class RunTaskSchema(_TaskResults):
    id = fields.String(required=True)
    title = fields.String()
    status = fields.String(validate=validate.OneOf(TASK_STATUSES))
    assignTo = fields.String(allow_none=True, metadata={"description": "With `include=graph`."})
    dependsOn = fields.List(fields.String(), metadata={"description": "With `include=graph`: titles, as in its spec."})
    attempts = fields.List(
        fields.Nested("AttemptBriefSchema"),
        metadata={"description": "With `include=attempts`: every attempt in brief, oldest first."},
    )


class RunGateSchema(_Out):
    index = fields.Integer(required=True)
    name = fields.String()
    afterTasks = fields.List(fields.String(), required=True)
    blocksTasks = fields.List(fields.String())
    minScore = fields.Float()
    requireAllPassed = fields.Boolean()
    message = fields.String(metadata={"description": "A checkpoint's."})
    status = fields.String(
        allow_none=True,
        metadata={
            "description": "A gate: `pending`, `passed`, `blocked`, `overridden`; a checkpoint: "
            "`pending`, `waiting`, `approved`."
        },
    )


class ReviewerSchema(_Out):
    id = fields.String(required=True, metadata={"description": "The id of the API key that decided."})
    name = fields.String(required=True, metadata={"description": "The name the key is shown by (its prefix)."})


class ReviewRecordSchema(_Out):
    decision = fields.String(
        required=True,
        validate=validate.OneOf(["approve", "request_changes", "reject", "fail"]),
        metadata={"description": "`fail` only by a timeout whose `onTimeout` is `fail`."},
    )
    at = fields.String(required=True, metadata={"format": "date-time"})
    reviewer = fields.Nested(ReviewerSchema, allow_none=True, metadata={"description": "None for a timeout."})
    feedback = fields.String(allow_none=True)
    redo = fields.List(fields.String(), metadata={"description": "Titles re-run with the feedback."})
    checkpoints = fields.List(fields.String(), metadata={"description": "The checkpoints it decided."})
    tasks = fields.List(fields.String(), metadata={"description": "The tasks awaiting approval it decided."})
    timedOut = fields.Boolean(required=True)


class RunDelaySchema(schemas.DelaySchema):
    """A delay as the mission gives it, and where it is in the run."""

    class Meta:
        unknown = EXCLUDE

    status = fields.String(required=True, validate=validate.OneOf(["pending", "waiting", "elapsed"]))
    until = fields.String(allow_none=True, metadata={"format": "date-time", "description": "Set once it waits."})


class _RunHead(_Out):
    """What a run and its report both start with."""

    missionId = fields.String(required=True)
    number = fields.Integer(required=True, metadata={"description": "1 for the first run of the mission."})
    status = fields.String(required=True, validate=validate.OneOf(MISSION_STATUSES))
    pauseReason = fields.String(validate=validate.OneOf(PAUSE_REASONS))
    pauseMessage = fields.String(allow_none=True)
    failureReason = fields.String()
    createdAt = fields.String(allow_none=True, metadata={"format": "date-time"})
    startedAt = fields.String(allow_none=True, metadata={"format": "date-time"})
    finishedAt = fields.String(allow_none=True, metadata={"format": "date-time"})


class RunSchema(_RunHead):
    id = fields.String(required=True, metadata={"example": "run_0a1b2c3d4e5f6a7b8c9d0e1f"})
    data = fields.Raw(metadata={"description": "The run's own data, as given (absent: none was)."})
    usage = fields.Nested(UsageSchema, metadata={"description": "Tokens and cost of this run."})
    durationSeconds = _seconds("With `include=summary` (the run list): start to finish, or to now.")
    averageScore = fields.Float(
        allow_none=True,
        metadata={"description": "With `include=summary`: mean score of its scored tasks (null: none), as its report."},
    )
    scoredTasks = fields.Integer(metadata={"description": "With `include=summary`."})
    tasks = fields.List(fields.Nested(RunTaskSchema), metadata={"description": "Absent in the run list."})
    qualityGates = fields.List(
        fields.Nested(RunGateSchema),
        metadata={"description": "With `include=graph`: the run's gates and their status."},
    )
    checkpoints = fields.List(
        fields.Nested(RunGateSchema), metadata={"description": "With `include=graph`: its checkpoints and status."}
    )
    reviews = fields.List(
        fields.Nested(ReviewRecordSchema),
        metadata={"description": "Every decision taken at a checkpoint or an approval, in order (absent in the list)."},
    )
    delays = fields.List(fields.Nested(RunDelaySchema), metadata={"description": "Absent in the run list."})


class FireSchema(_Out):
    fireAt = fields.String(required=True, metadata={"format": "date-time", "description": "When the schedule fired."})
    status = fields.String(required=True, metadata={"description": "`started`, or `skipped` with a reason."})
    reason = fields.String(metadata={"description": "Why a fire was skipped, e.g. a run was still active."})
    runId = fields.String(metadata={"description": "The run a started fire created."})
    recordedAt = fields.String(required=True, metadata={"format": "date-time"})


class EscalationSchema(_Out):
    escalated = fields.Boolean(required=True, metadata={"description": "A fallback agent or an escalated model ran."})
    fallbackAgent = fields.Boolean(required=True, metadata={"description": "The attempt ran a `fallbackAgent`."})
    escalatedModel = fields.Boolean(required=True, metadata={"description": "The attempt ran the `escalateModel`."})


class CriterionResultSchema(_Out):
    type = fields.String(required=True, metadata={"description": "`criterion`, `contains`, `regex`, `command`, ..."})
    criterion = fields.String(required=True, metadata={"description": "The criterion, or the check's label."})
    score = fields.Float(required=True, metadata={"description": "1-5 (a deterministic check scores 5 or 1)."})
    reason = fields.String(required=True, metadata={"description": "The judge's (or the check's) reason."})
    weight = fields.Float(required=True)


class AssessmentSchema(_Out):
    score = fields.Float(allow_none=True, metadata={"description": "The weighted score; null when it failed."})
    threshold = fields.Float(required=True, metadata={"description": "The mission's `qualityThreshold`."})
    passed = fields.Boolean(required=True)
    error = _nullable_text("Why the assessment itself failed.")
    judge = _nullable_text("The judge model, when a criterion needed one.")
    criteria = fields.List(fields.Nested(CriterionResultSchema), required=True)


class SpentSchema(_Out):
    tokensIn = fields.Integer(required=True)
    tokensOut = fields.Integer(required=True)
    costUsd = fields.Float(required=True, metadata={"description": "Estimated from the price table."})


class JudgeUsageSchema(SpentSchema):
    model = _nullable_text("The judge model.")


class AttemptBriefSchema(_Out):
    """An attempt as a timeline draws it."""

    attempt = fields.Integer(required=True, metadata={"description": "1 for the first attempt of the task in the run."})
    status = fields.String(
        required=True,
        validate=validate.OneOf([s.value for s in AttemptStatus]),
        metadata={"description": "An attempt never goes back: a failed one stays failed while its task is retried."},
    )
    agent = _nullable_text("The agent that ran it.")
    model = _nullable_text("Its model (`provider/model`).")
    escalation = fields.Nested(
        EscalationSchema, allow_none=True, metadata={"description": "Null once the task left the run."}
    )
    error = _nullable_text("Why it failed or was cancelled.")
    score = fields.Float(allow_none=True, metadata={"description": "Its assessment's score, once assessed."})
    queuedAt = _time("Queued.")
    startedAt = _time("Claimed by a worker: the agent started.")
    assessingAt = _time("The agent finished and the assessment began (null without one).")
    finishedAt = _time("The attempt ended (null while queued, running or assessing).")
    queueSeconds = _seconds("From queued to started.")
    agentSeconds = _seconds("From started to the agent's end.")
    assessmentSeconds = _seconds("From the agent's end to the verdict.")
    durationSeconds = _seconds("From started to finished.")


class AttemptSchema(AttemptBriefSchema):
    worker = _nullable_text("The worker that claimed it.")
    prompt = _nullable_text("The prompt the agent was given (with earlier failures and feedback).")
    output = _nullable_text("What the agent produced (untrusted text).")
    lastSentAt = _time("Last sent to the broker (sent again while no worker claimed it).")
    heartbeatAt = _time("The worker's last heartbeat.")
    tokensIn = fields.Integer(required=True, metadata={"description": "The agent's own."})
    tokensOut = fields.Integer(required=True)
    costUsd = fields.Float(required=True, metadata={"description": "The agent's own, estimated from the price table."})
    judge = fields.Nested(JudgeUsageSchema, required=True, metadata={"description": "What judging it cost."})
    usage = fields.Nested(SpentSchema, required=True, metadata={"description": "Agent and judge together."})
    files = fields.List(
        fields.Dict(), required=True, metadata={"description": '`[{"type": "file", "path": ..., "characters": n}]`.'}
    )
    assessment = fields.Nested(AssessmentSchema, allow_none=True, metadata={"description": "Null until assessed."})


class ReportTaskSchema(SpentSchema):
    id = fields.String(required=True)
    title = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(TASK_STATUSES))
    attempts = fields.Integer(required=True)
    score = fields.Float(allow_none=True, metadata={"description": "Its latest attempt's score."})
    durationSeconds = _seconds("From its first attempt queued to its last attempt's end, retries included.")
    workSeconds = fields.Float(required=True, metadata={"description": "Its attempts' time from start to end, summed."})


class ReportTotalsSchema(SpentSchema):
    tasks = fields.Integer(required=True)
    tasksByStatus = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(),
        required=True,
        metadata={"description": "Every status, 0 or more."},
    )
    scoredTasks = fields.Integer(required=True)
    attempts = fields.Integer(required=True)
    workSeconds = fields.Float(required=True)


class ReportSchema(_RunHead):
    runId = fields.String(required=True)
    durationSeconds = _seconds("From start to finish, or to now while it has not finished.")
    averageScore = fields.Float(
        allow_none=True, metadata={"description": "Mean score of its scored tasks; null when none is scored."}
    )
    totals = fields.Nested(ReportTotalsSchema, required=True)
    tasks = fields.List(fields.Nested(ReportTaskSchema), required=True, metadata={"description": "In spec order."})


class WebhookOutSchema(_Out):
    id = fields.String(required=True, metadata={"example": "wh_4h2k9x7q0c1v2b3n4m5l6k7j"})
    url = fields.String(required=True)
    events = fields.List(fields.String(validate=validate.OneOf(EVENT_NAMES)), required=True)
    missionIds = fields.List(fields.String(), allow_none=True, metadata={"description": "`null`: every mission."})
    enabled = fields.Boolean(required=True)
    description = fields.String(allow_none=True)
    createdAt = fields.String(required=True, metadata={"format": "date-time"})
    updatedAt = fields.String(required=True, metadata={"format": "date-time"})
    secret = fields.String(
        metadata={"description": "The signing secret: only in the answer that created or rotated it."}
    )
    previousSecretExpiresAt = fields.String(
        metadata={
            "format": "date-time",
            "description": "After a rotation: until then deliveries carry a second signature, by the old secret.",
        }
    )


class DeliveryAttemptSchema(_Out):
    attempt = fields.Integer(required=True)
    startedAt = fields.String(required=True, metadata={"format": "date-time"})
    durationMs = fields.Integer(required=True)
    statusCode = fields.Integer(allow_none=True, metadata={"description": "The receiver's HTTP status."})
    response = fields.String(allow_none=True, metadata={"description": "The first 500 characters of its body."})
    error = fields.String(allow_none=True, metadata={"description": "Why no answer came (refused, timeout, ...)."})


class DeliverySchema(_Out):
    id = fields.String(required=True, metadata={"description": "The `webhook-id` header of every attempt."})
    eventId = fields.Integer(required=True, metadata={"description": "The SSE `id:` of the event."})
    type = fields.String(required=True, validate=validate.OneOf(EVENT_NAMES))
    missionId = fields.String(required=True)
    runId = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["pending", "delivered", "failed"]))
    attemptCount = fields.Integer(required=True)
    nextAttemptAt = fields.String(allow_none=True, metadata={"format": "date-time"})
    createdAt = fields.String(required=True, metadata={"format": "date-time"})
    finishedAt = fields.String(allow_none=True, metadata={"format": "date-time"})
    attempts = fields.List(fields.Nested(DeliveryAttemptSchema), required=True)


class ApiKeySchema(_Out):
    id = fields.String(required=True, metadata={"example": "key_4h2k9x7q0c1v2b3n4m5l6k7j"})
    prefix = fields.String(required=True, metadata={"description": "The first characters of the secret."})
    name = fields.String(required=True, allow_none=True)
    createdAt = fields.String(required=True, metadata={"format": "date-time"})
    lastUsedAt = fields.String(
        required=True, allow_none=True, metadata={"format": "date-time", "description": "To the minute."}
    )
    revoked = fields.Boolean(required=True)
    revokedAt = fields.String(required=True, allow_none=True, metadata={"format": "date-time"})


class ApiKeyCreatedSchema(ApiKeySchema):
    key = fields.String(
        required=True,
        allow_none=True,
        metadata={
            "description": "The secret (`sk_live_...`), shown this once (`null` when an Idempotency-Key replays)."
        },
    )


class AgentOutSchema(schemas.AgentSchema):
    """A reusable agent as stored, with when it last changed."""

    class Meta:
        unknown = EXCLUDE

    updatedAt = fields.String(required=True, metadata={"format": "date-time"})


class HealthSchema(_Out):
    status = fields.String(required=True, validate=validate.OneOf(["ok"]))


class ReadySchema(_Out):
    status = fields.String(required=True, validate=validate.OneOf(["ready", "not_ready"]))
    checks = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        required=True,
        metadata={"description": "`ok` or the error, for `postgres` and `redis`."},
    )


MAX_EVENT_ID = 2**63 - 1  # (api.http.sse refuses a larger id)


class EventsQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    runId = fields.String(metadata={"description": "Another run than the latest."})
    lastEventId = fields.Integer(
        validate=validate.Range(min=0, max=MAX_EVENT_ID),
        metadata={"description": "Replay after this event id (the `Last-Event-ID` header wins when both are sent)."},
    )
    limit = fields.Integer(
        validate=validate.Range(min=1, max=1000),
        metadata={"description": "The JSON page only: at most this many events (default 100)."},
    )
    after = schemas.after_field("The JSON page only: " + schemas.AFTER_TEXT.replace("offset", "Last-Event-ID"))


class EventSchema(_Out):
    id = fields.Integer(required=True, metadata={"description": "Increasing; the stream's `id:`."})
    type = fields.String(required=True, validate=validate.OneOf(EVENT_NAMES), metadata={"description": "`event:`"})
    data = fields.Dict(required=True, metadata={"description": "The stream's `data:`, with `missionId` and `runId`."})
    createdAt = fields.String(required=True, metadata={"format": "date-time"})


# -- The documentation of each endpoint -----------------------------------------------------
@dataclass(frozen=True)
class Doc:
    summary: str
    description: str = ""
    tag: str = "Missions"
    body: str | None = None  # a component schema name
    body_required: bool = True
    query: type[Schema] | Schema | None = None
    responses: Mapping[int, tuple[str, str | None]] = field(default_factory=dict)  # status -> (text, schema)
    errors: tuple[int, ...] = ()
    auth: bool = True
    content_type: str = "application/json"
    headers: tuple[dict[str, Any], ...] = ()
    example: Any = None
    paged: bool = False  # a list with keyset paging: its 200 carries X-Next-Cursor and Link
    json_alternative: str | None = None  # a 200 that is also served as this JSON schema (``Accept``)


SSE = "text/event-stream"
SSE_EXAMPLE = (
    "retry: 2000\n\n"
    'id: 1\nevent: mission:status\ndata: {"missionId": "msn_...", "runId": "run_...", "status": "active"}\n\n'
    ": keep-alive\n\n"
)
EVENTS_TEXT = (
    "A `text/event-stream`: every event has an `id:` (increasing), an `event:` name and a JSON `data:` "
    "object carrying `missionId` and `runId`. Names: " + ", ".join(f"`{n}`" for n in EVENT_NAMES) + ". "
    "An `error` event (every failed attempt, and a run stopped by its deadline or budget) carries a stable "
    "`code` (" + ", ".join(f"`{c.value}`" for c in ErrorCode) + ") and a human-readable `message`; about a task "
    "also `taskId`, `title`, `attempt`, `agent`, `model` and `willRetry`. A task failing with "
    + ", ".join(f"`{c.value}`" for c in ErrorCode if c in NON_RETRYABLE)
    + " spends no retry on the same agent and model (it still escalates). "
    "The server sends `: keep-alive` comments every 15 s and ends the stream after `mission:done`. "
    "A client that reconnects with `Last-Event-ID` gets exactly the events after that id."
)
HELLO_MISSION = {
    "name": "hello",
    "prompt": "Say hello.",
    "tasks": [{"title": "Greet", "description": "Write a greeting.", "assignTo": "writer"}],
    "team": {
        "name": "crew",
        "volatile": True,
        "agents": [
            {
                "name": "writer",
                "role": "Writes",
                "model": "scripted/demo",
                "script": [{"outputChunks": ["Hello, ", "world"]}],
            }
        ],
    },
}

DOCS: dict[tuple[str, str], Doc] = {
    ("missions_v1.list_missions", "GET"): Doc(
        "List missions",
        "Summaries of the project's missions, oldest first (by creation); `q` searches names, `include` "
        "adds the latest run and the next scheduled fire to each. Page with `limit` and either `offset` or "
        "`after` (the `X-Next-Cursor` of the previous page: as fast deep in the list as at its start).",
        query=schemas.ListQuerySchema,
        paged=True,
        responses={200: ("The missions.", "MissionSummary[]")},
        errors=(400,),
    ),
    ("missions_v1.create_mission", "POST"): Doc(
        "Create a mission",
        "Validates the whole document (references, cycles, gates and checkpoints reachability, ranges, "
        "cron) and stores it with its tasks; status `draft`, or `scheduled` with a `schedule`. A "
        "rejected request leaves nothing behind. Names are unique per project.",
        body="Mission",
        example=HELLO_MISSION,
        responses={201: ("Created; `Location` names the mission.", "MissionCreated")},
        errors=(400, 409, 413, 415),
    ),
    ("missions_v1.list_resumable", "GET"): Doc(
        "List paused missions",
        "Missions waiting for a person (`resume` or `abort`), with why they paused; `include=waitingFor` "
        "adds each cause: a waiting checkpoint, a blocked gate with its afterTasks' scores against its "
        "`minScore`, a task awaiting approval.",
        query=schemas.ResumableQuerySchema,
        responses={200: ("The paused missions.", "Resumable[]")},
        errors=(400,),
    ),
    ("missions_v1.get_mission", "GET"): Doc(
        "Get a mission",
        "The whole mission with every task and its status in the latest run.",
        responses={200: ("The mission.", "MissionDetail")},
        errors=(404,),
    ),
    ("missions_v1.patch_mission", "PATCH"): Doc(
        "Change a mission",
        "Changes only the fields given (`null` clears an optional field); the whole document is "
        "validated again. Tasks change through their own routes. 409 while the mission is active or paused.",
        body="MissionPatch",
        example={"prompt": "Say hello politely."},
        responses={200: ("The changed mission.", "MissionDetail")},
        errors=(400, 404, 409, 413, 415),
    ),
    ("missions_v1.delete_mission", "DELETE"): Doc(
        "Delete a mission",
        "Deletes the mission, its tasks and runs. 409 while active or paused (abort it first).",
        responses={204: ("Deleted.", None)},
        errors=(404, 409),
    ),
    ("missions_v1.add_task", "POST"): Doc(
        "Add a task",
        "Adds a task; while the mission runs it joins the run and starts as soon as its `dependsOn` completed.",
        tag="Tasks",
        body="TaskCreate",
        example={
            "title": "Translate",
            "description": "Translate the greeting.",
            "assignTo": "writer",
            "dependsOn": ["Greet"],
        },
        responses={201: ("The task.", "TaskDetail")},
        errors=(400, 404, 409, 413, 415),
    ),
    ("missions_v1.update_task", "PATCH"): Doc(
        "Change a task",
        "While the mission runs, only a task that has not started can change, and not its title.",
        tag="Tasks",
        body="TaskPatch",
        example={"priority": 10},
        responses={200: ("The task.", "TaskDetail")},
        errors=(400, 404, 409, 413, 415),
    ),
    ("missions_v1.delete_task", "DELETE"): Doc(
        "Remove a task",
        "409 for the last task of a mission or a task others still refer to.",
        tag="Tasks",
        responses={204: ("Removed.", None)},
        errors=(404, 409),
    ),
    ("control_v1.retry_task", "POST"): Doc(
        "Retry one task",
        "Runs one task of the latest run again with a fresh retry budget: a `failed` or `cancelled` task, "
        "or, for a `skipped` one, the failed or cancelled tasks it was skipped because of; what was "
        "skipped because of them is `pending` again. Completed tasks keep their outputs. On a mission "
        "whose run `failed` because tasks failed or were cancelled, that run becomes active again "
        "(not after an abort, a deadline or a spent budget). 409 when the task's state does not allow it.",
        tag="Tasks",
        responses={200: ("The task as it now stands.", "TaskDetail")},
        errors=(404, 409),
    ),
    ("control_v1.reassess_task", "POST"): Doc(
        "Reassess one task",
        "Scores the last output of a `failed` task whose last attempt failed its assessment again (e.g. after "
        "the judge was fixed); the agent does not run. The task is `assessing`; that verdict no longer counts "
        "against its retry budget; what was skipped because of it is `pending` until the new verdict. A run "
        "that failed because of it becomes active again. 409 for any other task.",
        tag="Tasks",
        responses={200: ("The task as it now stands.", "TaskDetail")},
        errors=(404, 409),
    ),
    ("control_v1.cancel_task", "POST"): Doc(
        "Cancel one task",
        "Stops one unfinished task of the live run at once (its agent, or its judge, within a second), "
        "marks it `cancelled` and skips its dependents; independent branches go on. A run whose only "
        "problem is a cancelled task ends `failed` with reason `task_cancelled` (retry the task to go "
        "on). 409 for a task that already ended or a mission that is not running.",
        tag="Tasks",
        responses={200: ("The task as it now stands.", "TaskDetail")},
        errors=(404, 409),
    ),
    ("control_v1.review", "POST"): Doc(
        "Review a checkpoint or an approval",
        "A person's decision at what waits for one in the paused run (every waiting checkpoint and every "
        "task awaiting approval): `approve` goes on (a task awaiting approval runs again); "
        "`request_changes` (with `feedback`) re-runs the waiting checkpoints' afterTasks named in `redo` "
        "(all of them when empty) and the tasks awaiting approval, with the feedback and their previous "
        "output in their prompts, and the checkpoint is reached again after them; `reject` fails the "
        "mission with reason `rejected`. Each decision is recorded on the run (`reviews` in `GET .../runs/"
        "{runId}`: who, when, feedback) and streamed as `review:decided`. 400 for a `redo` title the mission "
        "does not have or `request_changes` without feedback; 409 when nothing waits for a review (a run "
        "paused only for a quality gate is resumed with `resume`) or a `redo` task is not an afterTask of a "
        "waiting checkpoint.",
        tag="Runs",
        body="Review",
        example={"decision": "request_changes", "feedback": "Cite your sources.", "redo": ["Draft"]},
        responses={200: ("The mission.", "MissionDetail")},
        errors=(400, 404, 409, 415),
    ),
    ("missions_v1.execute", "POST"): Doc(
        "Execute a mission",
        "Starts a new run. With `Accept: text/event-stream` the response is the run's event stream; "
        "otherwise 202 with the run. 409 while a run is active or paused. An optional `data` object is "
        "this run's own input, merged over the mission's `data` at the top level for this run only.",
        tag="Runs",
        body="Execute",
        body_required=False,
        example={"data": {"branch": "main"}},
        headers=(
            {
                "name": "Accept",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "examples": [SSE, "application/json"]},
                "description": "`text/event-stream` (preferred over `application/json`) to answer with the "
                "run's event stream (200) instead of the run (202).",
            },
        ),
        responses={202: ("The run started; `Location` names it.", "Run"), 200: (EVENTS_TEXT, "sse")},
        errors=(400, 404, 409, 415),
    ),
    ("missions_v1.events", "GET"): Doc(
        "Stream a run's events",
        "The events of the latest run (or `runId`) after `Last-Event-ID`, then live ones until `mission:done`. "
        "204 when the client has already seen `mission:done`. With `Accept: application/json` instead: one "
        "page of the run's event log, oldest first, after `Last-Event-ID` or `after` (the `X-Next-Cursor` "
        "of the previous page), at most `limit` events, and no live ones.",
        tag="Runs",
        query=EventsQuerySchema,
        paged=True,
        json_alternative="Event[]",
        headers=(
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": "^[0-9]{0,19}$"},
                "description": "The id of the last event received (a whole number, at most 2^63-1); "
                "empty means absent. 400 otherwise.",
            },
            {
                "name": "Accept",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "examples": [SSE, "application/json"]},
                "description": "`application/json` (preferred over `text/event-stream`) for a page of the log "
                "instead of the stream; anything else, or none, streams.",
            },
        ),
        responses={200: (EVENTS_TEXT, "sse"), 204: ("Nothing more: the run ended at or before that id.", None)},
        errors=(400, 404),
    ),
    ("missions_v1.resume", "POST"): Doc(
        "Resume a paused mission, or continue a failed one",
        "Settles every cause of the pause: approves waiting checkpoints; a blocked quality gate is judged "
        "again after its failed or low-scoring tasks re-run (`retryFailed: true`) or is overridden "
        "(`false`); a task awaiting approval runs again (`true`) or fails (`false`). With "
        "`retryFailed: true` it also continues a `failed` mission whose run ended because tasks failed "
        "(reason `task_failed`): the same run becomes active again, completed tasks keep their outputs "
        "and are not run again, failed tasks (and what was skipped because of them) re-run with a fresh "
        "budget. A run that was aborted, passed its deadline or spent its budget is not continued (409).",
        tag="Runs",
        body="Resume",
        body_required=False,
        example={"retryFailed": True},
        responses={200: ("The mission.", "MissionDetail")},
        errors=(400, 404, 409, 415),
    ),
    ("missions_v1.abort", "POST"): Doc(
        "Abort a mission",
        "Stops now: running agents are cancelled within a second, unfinished tasks become `cancelled`, "
        "and so does the mission.",
        tag="Runs",
        responses={200: ("The mission.", "MissionDetail")},
        errors=(404, 409),
    ),
    ("missions_v1.list_runs", "GET"): Doc(
        "List runs",
        "The mission's runs, newest first; `include=summary` adds each one's duration and average score. "
        "Page with `limit` and either `offset` or `after` (the `X-Next-Cursor` of the previous page).",
        tag="Runs",
        query=schemas.RunListQuerySchema,
        paged=True,
        responses={200: ("The runs, without their tasks.", "Run[]")},
        errors=(400, 404),
    ),
    ("missions_v1.list_fires", "GET"): Doc(
        "List schedule fires",
        "Each fire of the mission's schedule, newest first: the run it started, or why it was skipped. "
        "Page with `limit` and either `offset` or `after` (the `X-Next-Cursor` of the previous page).",
        tag="Runs",
        query=schemas.PageQuerySchema,
        paged=True,
        responses={200: ("The fires.", "Fire[]")},
        errors=(400, 404),
    ),
    ("missions_v1.get_run", "GET"): Doc(
        "Get a run",
        "One run with the state of each task in it; `include=attempts` adds each task's attempts in "
        "brief (for a timeline: phases, escalations), `include=graph` its `assignTo` and `dependsOn` and "
        "the run's gates and checkpoints with their status (its own spec: tasks added while it ran included).",
        tag="Runs",
        query=schemas.RunQuerySchema,
        responses={200: ("The run.", "Run")},
        errors=(400, 404),
    ),
    ("missions_v1.list_attempts", "GET"): Doc(
        "List a task's attempts in a run",
        "Every attempt of the task in the run, oldest first: who ran it with which model, its prompt, "
        "output and error, when it was queued, started, assessed and finished, tokens and cost (the "
        "agent's and the judge's), the files it wrote, whether it escalated, and its assessment per "
        "expectation. A task has at most `1 + maxRetries` attempts per try (plus one escalated) and a "
        "resume with `retryFailed` gives it a fresh budget, so the list is paged by attempt number: "
        "`limit` and `after` (the `X-Next-Cursor` of the previous page). Prompts and outputs are untrusted text.",
        tag="Runs",
        query=schemas.AttemptsQuerySchema,
        paged=True,
        responses={200: ("A page of attempts, oldest first.", "Attempt[]")},
        errors=(400, 404),
    ),
    ("missions_v1.run_report", "GET"): Doc(
        "Get a run's report",
        "Per task (in the run's order): status, attempts, duration, score, tokens and cost (agents and "
        "judges); the run's duration, totals, tasks by status and average score (over scored tasks).",
        tag="Runs",
        responses={200: ("The report.", "Report")},
        errors=(404,),
    ),
    ("webhooks_v1.create_webhook", "POST"): Doc(
        "Create a webhook",
        "Events of the project's runs (or only of `missionIds`) are POSTed to `url`, signed the Standard "
        "Webhooks way (`webhook-id`, `webhook-timestamp`, `webhook-signature`). The signing secret is "
        "answered here once. A URL whose host is loopback, private or link-local is refused unless the "
        "operator allows it (`MISSIONS_EGRESS_ALLOW`). 409 when the project has `MISSIONS_MAX_WEBHOOKS` already.",
        tag="Webhooks",
        body="WebhookCreate",
        example={"url": "http://hooks.example.com/missions", "events": ["mission:done", "checkpoint:waiting"]},
        responses={201: ("Created, with its `secret`; `Location` names it.", "Webhook")},
        errors=(400, 404, 409, 413, 415),
    ),
    ("webhooks_v1.list_webhooks", "GET"): Doc(
        "List webhooks",
        "The project's webhooks, oldest first (without their secrets).",
        tag="Webhooks",
        responses={200: ("The webhooks.", "Webhook[]")},
    ),
    ("webhooks_v1.get_webhook", "GET"): Doc(
        "Get a webhook", tag="Webhooks", responses={200: ("The webhook.", "Webhook")}, errors=(404,)
    ),
    ("webhooks_v1.patch_webhook", "PATCH"): Doc(
        "Change a webhook",
        "Changes only the fields given. `enabled: false` stops deliveries (pending ones wait until it is "
        "enabled again); `rotateSecret: true` generates a new secret (answered once), `secret` sets one.",
        tag="Webhooks",
        body="WebhookPatch",
        example={"enabled": False},
        responses={200: ("The webhook (with `secret` after a rotation).", "Webhook")},
        errors=(400, 404, 413, 415),
    ),
    ("webhooks_v1.delete_webhook", "DELETE"): Doc(
        "Delete a webhook",
        "Deletes it with its deliveries; nothing more is sent.",
        tag="Webhooks",
        responses={204: ("Deleted.", None)},
        errors=(404,),
    ),
    ("webhooks_v1.list_deliveries", "GET"): Doc(
        "List deliveries",
        "The webhook's deliveries, newest first, each with its attempts (status code and the start of "
        "the answer, or why none came). Page with `limit` and `after` (the `X-Next-Cursor` of the previous page).",
        tag="Webhooks",
        query=DELIVERIES_QUERY,
        paged=True,
        responses={200: ("A page of deliveries, newest first.", "Delivery[]")},
        errors=(400, 404),
    ),
    ("webhooks_v1.resend_delivery", "POST"): Doc(
        "Send a delivery again",
        "Makes the delivery due now, whatever its status; it is sent with the same `webhook-id`. "
        "409 while the webhook is disabled.",
        tag="Webhooks",
        responses={202: ("The delivery, due now.", "Delivery")},
        errors=(404, 409),
    ),
    ("keys_v1.list_keys", "GET"): Doc(
        "List API keys",
        "The project's keys, oldest first, revoked ones included. Secrets are never shown again (only "
        "their SHA-256 digest is stored); `prefix` tells keys apart. `lastUsedAt` is updated at most once "
        "a minute.",
        tag="Keys",
        responses={200: ("The keys.", "ApiKey[]")},
    ),
    ("keys_v1.create_key", "POST"): Doc(
        "Create an API key",
        "A new key of the project. The response holds its secret (`key`): the only time it is shown.",
        tag="Keys",
        body="KeyCreate",
        body_required=False,
        example={"name": "ci"},
        responses={201: ("The key, with its secret; `Location` names it.", "ApiKeyCreated")},
        errors=(400, 413, 415),
    ),
    ("keys_v1.revoke_key", "DELETE"): Doc(
        "Revoke an API key",
        "Revokes the key at once on every API process (its next request is a 401). Revoking a revoked "
        "key changes nothing. The key stays listed, with `revokedAt`.",
        tag="Keys",
        responses={200: ("The revoked key.", "ApiKey")},
        errors=(404,),
    ),
    ("agents_v1.list_agents", "GET"): Doc(
        "List reusable agents",
        "The project's agents, kept from non-volatile teams or put here, by name.",
        tag="Agents",
        responses={200: ("The agents.", "ReusableAgent[]")},
    ),
    ("agents_v1.get_agent", "GET"): Doc(
        "Get a reusable agent", tag="Agents", responses={200: ("The agent.", "ReusableAgent")}, errors=(404,)
    ),
    ("agents_v1.put_agent", "PUT"): Doc(
        "Create or replace a reusable agent",
        "Validated as a team's agent is (model, profile, tools, endpoints). Missions that name the agent use "
        "this configuration from their next run on; a run keeps the configuration it started with. A "
        "mission whose non-volatile team defines this agent differently is refused with a 409 until the "
        "two agree.",
        tag="Agents",
        body="ReusableAgentPut",
        example={"role": "Writes", "model": "scripted/demo"},
        responses={200: ("Replaced.", "ReusableAgent"), 201: ("Created.", "ReusableAgent")},
        errors=(400, 413, 415),
    ),
    ("agents_v1.delete_agent", "DELETE"): Doc(
        "Delete a reusable agent",
        "409 naming the missions that still need it (their tasks name it and their own team does not define it).",
        tag="Agents",
        responses={204: ("Deleted.", None)},
        errors=(404, 409),
    ),
    ("healthz", "GET"): Doc(
        "Liveness",
        "200 while the process serves requests; checks nothing else.",
        tag="Operations",
        auth=False,
        responses={200: ("Up.", "Health")},
    ),
    ("readyz", "GET"): Doc(
        "Readiness",
        "200 when Postgres and Redis answer, 503 otherwise.",
        tag="Operations",
        auth=False,
        responses={200: ("Ready.", "Ready"), 503: ("Not ready; `checks` says what failed.", "Ready")},
    ),
    ("metrics.metrics", "GET"): Doc(
        "Prometheus metrics",
        "Prometheus text format: missions and tasks by status, attempt duration and queue wait, attempts "
        "and retries, assessment scores, coordinator step duration, events published, SSE clients, tick lag, "
        "queue depth and the oldest queued attempt's age, broker queue lengths, tokens and cost by provider and "
        "model, ticks by outcome. When the operator sets MISSIONS_METRICS_TOKEN it needs "
        "`Authorization: Bearer <that token>` (not an API key: the metrics cover every project).",
        tag="Operations",
        auth=False,
        responses={200: ("Metrics.", "text")},
        errors=(401,),
    ),
    ("docs.openapi_json", "GET"): Doc(
        "This OpenAPI document", tag="Operations", auth=False, responses={200: ("OpenAPI 3.1.", "json")}
    ),
    ("docs.docs_page", "GET"): Doc(
        "API reference (HTML)",
        "This document rendered as a page, with a form to try each operation.",
        tag="Operations",
        auth=False,
        responses={200: ("An HTML page.", "html")},
    ),
}

_ERROR_TEXT = {
    400: "Invalid request: `details.fields` names every offending field (or parameter).",
    401: "Missing or invalid API key.",
    404: "No such mission, task, run, webhook or delivery in this project.",
    409: "Conflicts with the mission's current state.",
    413: "Body larger than MISSIONS_MAX_BODY_BYTES.",
    415: "The body is not `application/json`.",
    429: "Rate limited: this key made more requests than its limit allows (`X-RateLimit-*` say how many and "
    "when there is room again), or holds as many event streams as it may. Nothing was done; send the request "
    "again after `Retry-After` seconds.",
    503: "Unavailable: Postgres cannot be reached now (down, restarting, or no connection free within a few "
    "seconds); send the request again after `Retry-After` seconds.",
}
_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before sending the request again.", "schema": {"type": "integer"}}
}
_PAGE_HEADERS = {
    "X-Next-Cursor": {
        "description": "On a full page only: the cursor of its last item; send it as `?after=` for the next "
        "page. A page with fewer items than `limit` is the last and has no cursor.",
        "schema": {"type": "string"},
    },
    "Link": {
        "description": 'On a full page only: `<URL of the next page>; rel="next"`.',
        "schema": {"type": "string"},
    },
}
_RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": {
        "description": "Requests this key may make in one window (`MISSIONS_RATE_LIMIT_BURST` by default).",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Remaining": {"description": "Requests left in the current window.", "schema": {"type": "integer"}},
    "X-RateLimit-Reset": {"description": "Unix time when the window has room again.", "schema": {"type": "integer"}},
}
IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$"},
    "description": "Makes a retry safe: the first response to this key (per project) is kept for 24 h and a "
    "repeat of the same request gets it again (`Idempotent-Replayed: true`) without doing anything again. The "
    "same key with another request, or while the first is in progress, is a 409.",
}
_RULE_PARAM = re.compile(r"<(?:[a-z_]+:)?([a-z_]+)>")


def openapi_path(rule: str) -> str:
    """``/v1/missions/<mission_id>`` as ``/v1/missions/{missionId}``."""
    return _RULE_PARAM.sub(lambda m: "{" + PARAM_NAMES.get(m.group(1), m.group(1)) + "}", rule)


class UndocumentedRoute(LookupError):
    pass


def build_spec(app: Flask, *, strict: bool = False) -> dict[str, Any]:
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title=TITLE,
        version=_version(),
        openapi_version="3.1.0",
        plugins=[plugin],
        info={
            "description": "Missions groups tasks for AI agents into workflows with dependencies, retries, "
            "assessments, quality gates, checkpoints, deadlines and schedules. Authenticate "
            "with `Authorization: Bearer sk_live_...`; every resource belongs to the key's "
            "project. Errors are `{error, code, details}`; a request that Postgres being unavailable stops "
            "is a 503 with `Retry-After`. Before the app sees a request, the server refuses a request line "
            f"over {LIMIT_REQUEST_LINE} bytes (414) and more than {LIMIT_REQUEST_FIELDS} headers or one over "
            f"{LIMIT_REQUEST_FIELD_SIZE} bytes (431), in the same shape."
        },
        tags=[
            {"name": "Missions"},
            {"name": "Tasks"},
            {"name": "Runs"},
            {"name": "Webhooks"},
            {"name": "Keys"},
            {"name": "Agents"},
            {"name": "Operations"},
        ],
    )
    assert plugin.converter is not None
    plugin.converter.add_attribute_function(_exclusive_bounds)  # type: ignore[no-untyped-call]
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "sk_live_..."})
    for name, schema in (
        ("Mission", schemas.MISSION),
        # (The server's schema names `tasks` only to refuse it with a pointer to the task routes.)
        ("MissionPatch", schemas.MissionPatchSchema(partial=True, exclude=("tasks",))),
        ("TaskCreate", schemas.TASK),
        ("TaskPatch", schemas.TASK_PATCH),
        ("Resume", schemas.RESUME),
        ("Execute", schemas.EXECUTE),
        ("WebhookCreate", WEBHOOK),
        ("WebhookPatch", WEBHOOK_PATCH),
        ("Webhook", WebhookOutSchema),
        ("Delivery", DeliverySchema),
        ("Review", schemas.REVIEW),
        ("Error", ErrorSchema),
        ("MissionSummary", MissionSummarySchema),
        ("MissionCreated", MissionCreatedSchema),
        ("TaskDetail", TaskDetailSchema),
        ("MissionDetail", MissionDetailSchema),
        ("Resumable", ResumableSchema),
        ("Run", RunSchema),
        ("Fire", FireSchema),
        ("Event", EventSchema),
        ("Attempt", AttemptSchema),
        ("Report", ReportSchema),
        ("KeyCreate", KEY_CREATE),
        ("ApiKey", ApiKeySchema),
        ("ApiKeyCreated", ApiKeyCreatedSchema),
        ("ReusableAgentPut", AGENT_PUT),
        ("ReusableAgent", AgentOutSchema),
        ("Health", HealthSchema),
        ("Ready", ReadySchema),
    ):
        spec.components.schema(name, schema=schema)
    for status, text in _ERROR_TEXT.items():
        response: dict[str, Any] = {
            "description": text,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        if status in (429, 503):
            response["headers"] = _RETRY_AFTER
        if status == 429:
            response["headers"] = {**_RETRY_AFTER, **_RATE_LIMIT_HEADERS}
        spec.components.response(f"E{status}", response)

    by_path: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        path = openapi_path(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            doc = DOCS.get((rule.endpoint, method))
            if doc is None:
                if strict:
                    raise UndocumentedRoute(
                        f"{method} {rule.rule} ({rule.endpoint}) has no entry in api.http.openapi.DOCS"
                    )
                by_path.setdefault(path, {})[method.lower()] = {
                    "summary": f"{method} {path}",
                    "x-undocumented": True,
                    "responses": {"default": {"description": "Undocumented."}},
                }
                continue
            by_path.setdefault(path, {})[method.lower()] = _operation(rule.endpoint, rule.arguments, doc, method)
    for path, operations in by_path.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def _operation(endpoint: str, arguments: Any, doc: Doc, method: str) -> dict[str, Any]:
    name = endpoint.rsplit(".", 1)[-1]
    operation: dict[str, Any] = {
        "operationId": re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name),
        "summary": doc.summary,
        "tags": [doc.tag],
        "responses": {},
    }
    if doc.description:
        operation["description"] = doc.description
    parameters: list[Any] = [
        {"name": PARAM_NAMES.get(arg, arg), "in": "path", "required": True, "schema": {"type": "string"}}
        for arg in sorted(arguments)
    ]
    if doc.query is not None:
        parameters.append({"in": "query", "schema": doc.query})
    parameters.extend(doc.headers)
    if doc.auth and method in ("POST", "PATCH", "DELETE"):
        parameters.append(IDEMPOTENCY_HEADER)
    if parameters:
        operation["parameters"] = parameters
    if doc.body:
        media: dict[str, Any] = {"schema": doc.body}
        if doc.example is not None:
            media["example"] = doc.example
        operation["requestBody"] = {"required": doc.body_required, "content": {"application/json": media}}
    for status, (text, schema) in sorted(doc.responses.items()):
        operation["responses"][str(status)] = _response(text, schema)
        if doc.auth:
            operation["responses"][str(status)]["headers"] = dict(_RATE_LIMIT_HEADERS)
    if doc.json_alternative is not None:
        alternative = _response("", doc.json_alternative)["content"]
        operation["responses"]["200"].setdefault("content", {}).update(alternative)
    if doc.paged:
        operation["responses"]["200"].setdefault("headers", {}).update(_PAGE_HEADERS)
    errors = doc.errors
    if arguments or doc.query is not None:
        errors = (*errors, 400)  # a parameter the server refuses (a NUL character, a bound)
    if doc.auth:
        errors = (*errors, 401, 429, 503)  # (the key is looked up in Postgres; every key is rate limited)
    if doc.auth and method in ("POST", "PATCH", "DELETE"):
        errors = (*errors, 400, 409)  # (a malformed Idempotency-Key; the key reused or in progress)
    for status in sorted(set(errors)):
        operation["responses"][str(status)] = {"$ref": f"#/components/responses/E{status}"}
    operation["security"] = [{"bearer": []}] if doc.auth else []
    return operation


def _exclusive_bounds(_converter: Any, field: fields.Field[Any], ret: dict[str, Any], **_: Any) -> dict[str, Any]:
    """A ``Range`` that leaves out its end (``min_inclusive=False``: the value must be greater) as
    ``exclusiveMinimum``/``exclusiveMaximum`` (apispec writes ``minimum``/``maximum`` for both)."""
    out: dict[str, Any] = {}
    for validator in field.validators:
        if not isinstance(validator, validate.Range):
            continue
        if validator.min is not None and not validator.min_inclusive and ret.get("minimum") == validator.min:
            out["exclusiveMinimum"] = ret.pop("minimum")
        if validator.max is not None and not validator.max_inclusive and ret.get("maximum") == validator.max:
            out["exclusiveMaximum"] = ret.pop("maximum")
    return out


def _response(text: str, schema: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": text}
    if schema is None:
        return out
    if schema == "sse":
        out["content"] = {SSE: {"schema": {"type": "string"}, "example": SSE_EXAMPLE}}
    elif schema == "text":
        out["content"] = {"text/plain": {"schema": {"type": "string"}}}
    elif schema == "html":
        out["content"] = {"text/html": {"schema": {"type": "string"}}}
    elif schema == "json":
        out["content"] = {"application/json": {"schema": {"type": "object"}}}
    elif schema.endswith("[]"):
        out["content"] = {
            "application/json": {"schema": {"type": "array", "items": {"$ref": f"#/components/schemas/{schema[:-2]}"}}}
        }
    else:
        out["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
    return out


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("missions")
    except PackageNotFoundError:
        return "0"


def spec_of(app: Flask) -> dict[str, Any]:
    """The app's spec, built once."""
    cached = app.extensions.get("missions_openapi")
    if cached is None:
        cached = app.extensions["missions_openapi"] = build_spec(app)
    return dict(cached)


blueprint = Blueprint("docs", __name__)


@blueprint.get("/v1/openapi.json")
def openapi_json() -> Response:
    return jsonify(spec_of(current_app))


@blueprint.get("/docs")
def docs_page() -> Response:
    page = current_app.extensions.get("missions_docs_html")
    if page is None:
        page = current_app.extensions["missions_docs_html"] = render_html(spec_of(current_app))
    return Response(page, mimetype="text/html")


# -- The HTML reference ---------------------------------------------------------------------
def render_html(spec: Mapping[str, Any]) -> str:
    """A self-contained page: every operation with its parameters, body and responses, every schema."""
    components = spec.get("components", {}).get("schemas", {})
    ops: list[tuple[str, str, dict[str, Any]]] = [
        (path, method, op) for path, item in spec["paths"].items() for method, op in item.items()
    ]
    tags = [t["name"] for t in spec.get("tags", [])]
    nav, body = [], []
    for tag in tags:
        tagged = [o for o in ops if tag in o[2].get("tags", [])]
        if not tagged:
            continue
        nav.append(f"<h3>{_e(tag)}</h3><ul>")
        body.append(f'<h2 id="tag-{_e(tag)}">{_e(tag)}</h2>')
        for path, method, op in tagged:
            anchor = op.get("operationId") or f"{method}-{path}"
            nav.append(
                f'<li><a href="#{_e(anchor)}"><span class="m {method}">{method.upper()}</span> {_e(path)}</a></li>'
            )
            body.append(_operation_html(path, method, op, anchor, spec))
        nav.append("</ul>")
    nav.append(
        "<h3>Schemas</h3><ul>"
        + "".join(f'<li><a href="#schema-{_e(n)}">{_e(n)}</a></li>' for n in components)
        + "</ul>"
    )
    body.append("<h2>Schemas</h2>")
    for name, schema in components.items():
        body.append(
            f'<section class="schema" id="schema-{_e(name)}"><h3>{_e(name)}</h3>{_schema_table(schema)}</section>'
        )
    info = spec.get("info", {})
    return _PAGE.format(
        title=_e(info.get("title", TITLE)),
        version=_e(info.get("version", "")),
        description=_md(info.get("description", "")),
        nav="".join(nav),
        body="".join(body),
        script=_SCRIPT,
    )


def _operation_html(path: str, method: str, op: Mapping[str, Any], anchor: str, spec: Mapping[str, Any]) -> str:
    parts = [
        (
            f'<section class="op" id="{_e(anchor)}"><h3><span class="m {method}">{method.upper()}</span> '
            f"<code>{_e(path)}</code> — {_e(op.get('summary', ''))}</h3>"
        )
    ]
    if op.get("description"):
        parts.append(f"<p>{_md(op['description'])}</p>")
    parts.append("<p class='auth'>" + ("Needs an API key." if op.get("security") else "No authentication.") + "</p>")
    params = op.get("parameters", [])
    if params:
        parts.append("<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>type</th><th>description</th></tr>")
        for p in params:
            required = " <b>required</b>" if p.get("required") else ""
            parts.append(
                f"<tr><td><code>{_e(p['name'])}</code>{required}</td><td>{_e(p['in'])}</td>"
                f"<td>{_type(p.get('schema', {}))}</td><td>{_md(p.get('description', ''))}</td></tr>"
            )
        parts.append("</table>")
    body = op.get("requestBody")
    example = ""
    if body:
        media = body["content"]["application/json"]
        optional = "" if body.get("required") else " (optional)"
        parts.append(f"<h4>Request body{optional}</h4><p>{_type(media['schema'])}</p>")
        if "example" in media:
            example = json.dumps(media["example"], indent=2)
            parts.append(f"<pre>{_e(example)}</pre>")
    parts.append("<h4>Responses</h4><table><tr><th>status</th><th>description</th><th>body</th></tr>")
    for status, entry in op.get("responses", {}).items():
        response = spec["components"]["responses"][entry["$ref"].rsplit("/", 1)[-1]] if "$ref" in entry else entry
        content = response.get("content", {})
        shape = ", ".join(
            f"<code>{_e(kind)}</code> {_type(media.get('schema', {}))}" for kind, media in content.items()
        )
        parts.append(f"<tr><td>{_e(status)}</td><td>{_md(response.get('description', ''))}</td><td>{shape}</td></tr>")
    parts.append("</table>")
    parts.append(_try_form(path, method, params, bool(body), example))
    parts.append("</section>")
    return "".join(parts)


def _try_form(path: str, method: str, params: list[Mapping[str, Any]], has_body: bool, example: str) -> str:
    inputs = "".join(
        f'<label>{_e(p["name"])} <input data-in="{_e(p["in"])}" data-name="{_e(p["name"])}" size="28"></label> '
        for p in params
        if p.get("in") in ("path", "query", "header")
    )
    textarea = f'<textarea rows="6" data-body>{_e(example or "{}")}</textarea>' if has_body else ""
    return (
        f'<details class="try"><summary>Try it</summary><form data-method="{method.upper()}" '
        f'data-path="{_e(path)}">{inputs}{textarea}<button type="submit">Send</button>'
        f'<pre class="out"></pre></form></details>'
    )


def _type(schema: Mapping[str, Any]) -> str:
    if not schema:
        return "any"
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{_e(name)}">{_e(name)}</a>'
    if "anyOf" in schema:
        return " | ".join(_type(s) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    kinds = kind if isinstance(kind, list) else [kind]
    labels = []
    for k in kinds:
        if k == "array":
            labels.append(f"array of {_type(schema.get('items', {}))}")
        else:
            labels.append(_e(str(k)))
    text = " | ".join(labels)
    if schema.get("format"):
        text += f" ({_e(schema['format'])})"
    if "enum" in schema:
        text += ": " + ", ".join(f"<code>{_e(json.dumps(v))}</code>" for v in schema["enum"])
    limits = [
        f"{label} {schema[key]}"
        for key, label in (
            ("minimum", "≥"),
            ("exclusiveMinimum", ">"),
            ("maximum", "≤"),
            ("exclusiveMaximum", "<"),
            ("minLength", "min length"),
            ("maxLength", "max length"),
            ("maxItems", "max items"),
        )
        if key in schema
    ]
    if limits:
        text += f" <span class='lim'>({_e(', '.join(limits))})</span>"
    if "default" in schema:
        text += f" <span class='lim'>default <code>{_e(json.dumps(schema['default']))}</code></span>"
    return text


def _schema_table(schema: Mapping[str, Any]) -> str:
    properties = schema.get("properties", {})
    if not properties:
        return f"<p>{_type(schema)}</p>"
    required = set(schema.get("required", []))
    rows = ["<table><tr><th>field</th><th>type</th><th>description</th></tr>"]
    for name, prop in properties.items():
        mark = " <b>required</b>" if name in required else ""
        rows.append(
            f"<tr><td><code>{_e(name)}</code>{mark}</td><td>{_type(prop)}</td>"
            f"<td>{_md(prop.get('description', ''))}</td></tr>"
        )
    rows.append("</table>")
    if schema.get("additionalProperties") is False:
        rows.append("<p class='lim'>Unknown fields are rejected.</p>")
    return "".join(rows)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _md(text: str) -> str:
    """Escaped text with `code` spans, the only markup the descriptions use."""
    return re.sub(r"`([^`]+)`", lambda m: f"<code>{m.group(1)}</code>", _e(text))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{margin:0;font:15px/1.5 system-ui,sans-serif;color:#1d2330;display:flex}}
nav{{width:360px;flex:none;height:100vh;overflow:auto;position:sticky;top:0;background:#f5f6f8;padding:12px 16px;
box-sizing:border-box;font-size:13px}}
nav ul{{list-style:none;padding:0;margin:0 0 12px}} nav a{{text-decoration:none;color:inherit}}
nav li{{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}}
main{{flex:1;padding:16px 32px;max-width:1100px}} code,pre,textarea{{font:13px ui-monospace,monospace}}
pre{{background:#f5f6f8;padding:8px;overflow:auto}} table{{border-collapse:collapse;margin:6px 0}}
td,th{{border:1px solid #d8dbe2;padding:4px 8px;text-align:left;vertical-align:top}}
.op,.schema{{border-top:1px solid #d8dbe2;padding-top:8px;margin-top:16px}}
.m{{display:inline-block;min-width:54px;text-align:center;color:#fff;border-radius:3px;font-size:12px;padding:1px 4px}}
.get{{background:#2f7d32}}.post{{background:#1565c0}}.patch{{background:#ef6c00}}.delete{{background:#c62828}}
.put{{background:#6a1b9a}} .lim{{color:#5b6272}} .auth{{color:#5b6272;font-size:13px}}
.try form{{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start}} .try textarea{{width:100%}}
.try .out{{width:100%;max-height:300px}} #key{{width:100%;box-sizing:border-box}}
</style></head><body>
<nav><h2>{title}</h2><p>version {version} · <a href="/v1/openapi.json">openapi.json</a></p>
<label>API key<br><input id="key" placeholder="sk_live_..." autocomplete="off"></label>{nav}</nav>
<main><h1>{title}</h1><p>{description}</p>{body}</main>
<script>{script}</script></body></html>
"""

_SCRIPT = r"""
const key = document.getElementById('key');
key.value = localStorage.getItem('missionsKey') || '';
key.addEventListener('change', () => localStorage.setItem('missionsKey', key.value));
document.querySelectorAll('.try form').forEach(form => form.addEventListener('submit', async ev => {
  ev.preventDefault();
  const out = form.querySelector('.out');
  let path = form.dataset.path; const query = new URLSearchParams(); const headers = {};
  form.querySelectorAll('input').forEach(i => {
    if (!i.value) return;
    if (i.dataset.in === 'path') path = path.replace('{' + i.dataset.name + '}', encodeURIComponent(i.value));
    else if (i.dataset.in === 'query') query.set(i.dataset.name, i.value);
    else headers[i.dataset.name] = i.value;
  });
  if (key.value) headers['Authorization'] = 'Bearer ' + key.value;
  const init = {method: form.dataset.method, headers};
  const body = form.querySelector('[data-body]');
  if (body && body.value.trim()) { init.body = body.value; headers['Content-Type'] = 'application/json'; }
  out.textContent = '...';
  try {
    const response = await fetch(path + (query.toString() ? '?' + query : ''), init);
    out.textContent = response.status + ' ' + response.statusText + '\n';
    const reader = response.body ? response.body.getReader() : null;
    const decoder = new TextDecoder();
    while (reader) {
      const {done, value} = await reader.read();
      if (done) break;
      out.textContent += decoder.decode(value, {stream: true});
    }
  } catch (e) { out.textContent = String(e); }
}));
"""
