"""Request schemas: the type layer of validation.

Marshmallow checks shapes and types here (unknown fields are rejected and named, numbers must be
JSON numbers, strings have sane length limits); the rules that relate fields to each other
(references, cycles, ranges that depend on the team) live in ``orchestrator.validation``.
Loaded documents keep the API's camelCase keys: they are stored and served as they came in.
"""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, post_load, pre_load, validate

from orchestrator.engine import MissionStatus
from orchestrator.spec import format_timestamp, parse_timestamp

NAME_MAX = 200
TEXT_MAX = 20_000
PROMPT_MAX = 100_000
LIST_MAX = 1_000
TITLES_MAX = 100_000  # the server's MISSIONS_MAX_TASKS rule is the real bound


class StrictNumber(fields.Float):
    """A JSON number; strings and booleans are refused rather than coerced."""

    default_error_messages = {"invalid": "Not a valid number."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class StrictInteger(fields.Integer):
    default_error_messages = {"invalid": "Not a valid integer."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise self.make_error("invalid")
        return value


class StrictBoolean(fields.Boolean):
    default_error_messages = {"invalid": "Not a valid boolean."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class Timestamp(fields.String):
    """An ISO 8601 timestamp, stored normalised to UTC (``2026-04-01T00:00:00Z``)."""

    default_error_messages = {"invalid": "Not a valid ISO 8601 timestamp."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, str) or len(value) > 64:
            raise self.make_error("invalid")
        try:
            return format_timestamp(parse_timestamp(value))
        except ValueError:
            raise self.make_error("invalid") from None


def text(max_length: int, *, required: bool = False, allow_empty: bool = True) -> fields.String:
    checks = [validate.Length(min=0 if allow_empty else 1, max=max_length)]
    return fields.String(required=required, allow_none=not required, validate=checks)


def titles(**kwargs: Any) -> fields.List[Any]:
    """A list of task titles; as long as a mission may be (a fan-in task depends on all the others)."""
    return fields.List(
        fields.String(validate=validate.Length(min=1, max=NAME_MAX)), validate=validate.Length(max=TITLES_MAX), **kwargs
    )


class Strict(Schema):
    class Meta:
        unknown = RAISE


class ExpectationSchema(Strict):
    type = fields.String(
        validate=validate.OneOf(["criterion", "contains", "regex", "json_schema", "command"]), allow_none=True
    )
    name = text(NAME_MAX)
    criterion = text(TEXT_MAX)
    value = text(TEXT_MAX)
    pattern = text(TEXT_MAX)
    json_schema = fields.Dict(data_key="schema", attribute="schema", allow_none=True)
    run = text(TEXT_MAX)
    timeout = StrictNumber(allow_none=True, validate=validate.Range(min=0, min_inclusive=False))
    ignoreCase = StrictBoolean(allow_none=True)
    weight = StrictNumber(allow_none=True)


class OutcomeSchema(Strict):
    name = text(NAME_MAX, required=True, allow_empty=False)
    type = fields.String(validate=validate.OneOf(["file", "text", "url", "json"]), allow_none=True)
    description = text(TEXT_MAX)
    path = text(TEXT_MAX)
    required = StrictBoolean(allow_none=True)


class RetryPolicySchema(Strict):
    fallbackAgent = text(NAME_MAX)
    escalateModel = text(NAME_MAX)
    escalateAfter = StrictInteger(allow_none=True)
    backoff = StrictNumber(allow_none=True, validate=validate.Range(min=0, max=86_400))


class TaskSchema(Strict):
    title = text(NAME_MAX, required=True, allow_empty=False)
    description = text(TEXT_MAX, required=True)
    assignTo = text(NAME_MAX, required=True, allow_empty=False)
    dependsOn = titles(allow_none=True)
    expectations = fields.List(fields.Nested(ExpectationSchema), validate=validate.Length(max=100), allow_none=True)
    expectedOutcomes = fields.List(fields.Nested(OutcomeSchema), validate=validate.Length(max=100), allow_none=True)
    maxRetries = StrictInteger(allow_none=True)
    priority = StrictInteger(allow_none=True, validate=validate.Range(min=-1_000_000, max=1_000_000))
    sideEffects = StrictBoolean(allow_none=True)
    timeout = StrictNumber(allow_none=True)
    retryPolicy = fields.Nested(RetryPolicySchema, allow_none=True)


class ScriptStepSchema(Strict):
    output = text(PROMPT_MAX)
    outputChunks = fields.List(
        fields.String(validate=validate.Length(max=PROMPT_MAX)), validate=validate.Length(max=10_000), allow_none=True
    )
    delay = StrictNumber(allow_none=True, validate=validate.Range(min=0, max=86_400))
    fail = text(TEXT_MAX)
    score = StrictNumber(allow_none=True)
    reason = text(TEXT_MAX)


class AgentSchema(Strict):
    name = text(NAME_MAX, required=True, allow_empty=False)
    role = text(TEXT_MAX)
    model = text(NAME_MAX, required=True, allow_empty=False)
    systemPrompt = text(PROMPT_MAX)
    temperature = StrictNumber(allow_none=True, validate=validate.Range(min=0, max=2))
    maxTokens = StrictInteger(allow_none=True, validate=validate.Range(min=1, max=1_000_000))
    maxTurns = StrictInteger(allow_none=True, validate=validate.Range(min=1, max=1_000))
    tools = fields.List(fields.Raw(), validate=validate.Length(max=100), allow_none=True)
    maxConcurrency = StrictInteger(allow_none=True)
    profile = text(NAME_MAX)  # one of the operator's provider profiles (docs/security.md)
    baseUrl = text(2_000)  # (refused unless the operator allows mission endpoints)
    apiKeyEnv = text(NAME_MAX)
    allowedHosts = fields.List(
        fields.String(validate=validate.Length(max=NAME_MAX)), validate=validate.Length(max=100), allow_none=True
    )
    script = fields.List(fields.Nested(ScriptStepSchema), validate=validate.Length(max=1_000), allow_none=True)


class TeamSchema(Strict):
    name = text(NAME_MAX)
    volatile = StrictBoolean(allow_none=True)
    agents = fields.List(fields.Nested(AgentSchema), validate=validate.Length(max=1_000), allow_none=True)


class AssessorSchema(Strict):
    model = text(NAME_MAX, required=True, allow_empty=False)
    systemPrompt = text(PROMPT_MAX)
    profile = text(NAME_MAX)
    baseUrl = text(2_000)
    apiKeyEnv = text(NAME_MAX)
    script = fields.List(fields.Nested(ScriptStepSchema), validate=validate.Length(max=1_000), allow_none=True)


class GateSchema(Strict):
    name = text(NAME_MAX)
    afterTasks = titles(required=True)
    blocksTasks = titles(required=True)
    minScore = StrictNumber(allow_none=True)
    requireAllPassed = StrictBoolean(allow_none=True)


class CheckpointSchema(Strict):
    name = text(NAME_MAX)
    afterTasks = titles(required=True)
    blocksTasks = titles(allow_none=True)
    message = text(TEXT_MAX)


def _drop_nones(value: Any) -> Any:
    """Null optional fields mean 'not given' inside a document."""
    if isinstance(value, dict):
        return {k: _drop_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nones(v) for v in value]
    return value


class BudgetSchema(Strict):
    maxCostUsd = StrictNumber(allow_none=True, validate=validate.Range(min=0, min_inclusive=False))
    maxTokens = StrictInteger(allow_none=True, validate=validate.Range(min=1))


class MissionSchema(Strict):
    name = text(NAME_MAX, required=True, allow_empty=False)
    prompt = text(PROMPT_MAX)
    data = fields.Raw(allow_none=True)
    tasks = fields.List(fields.Nested(TaskSchema), required=True)
    team = fields.Nested(TeamSchema, allow_none=True)
    qualityThreshold = StrictNumber(allow_none=True)
    deadline = Timestamp(allow_none=True)
    schedule = text(NAME_MAX)
    timezone = text(NAME_MAX)
    qualityGates = fields.List(fields.Nested(GateSchema), validate=validate.Length(max=LIST_MAX), allow_none=True)
    checkpoints = fields.List(fields.Nested(CheckpointSchema), validate=validate.Length(max=LIST_MAX), allow_none=True)
    assessor = fields.Nested(AssessorSchema, allow_none=True)
    maxConcurrency = StrictInteger(allow_none=True)
    endDate = Timestamp(allow_none=True)
    catchUp = fields.String(validate=validate.OneOf(["skip", "latest"]), allow_none=True)
    deadlineAfter = StrictNumber(allow_none=True, validate=validate.Range(min=0, min_inclusive=False, max=366 * 86_400))
    budget = fields.Nested(BudgetSchema, allow_none=True)

    @post_load
    def _clean(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        # `data` is free-form user JSON: its nulls are content, not absent fields.
        payload = data.pop("data", None)
        cleaned = _drop_nones(data)
        if payload is not None:
            cleaned["data"] = payload
        return dict(cleaned)


class MissionPatchSchema(MissionSchema):
    """Any mission field except tasks; ``null`` clears an optional field."""

    @pre_load
    def _no_tasks(self, data: Any, **_: Any) -> Any:
        if isinstance(data, dict) and "tasks" in data:
            raise ValidationError(
                "tasks cannot be replaced with PATCH; use /v1/missions/{id}/tasks to add, change or remove tasks",
                "tasks",
            )
        return data

    @post_load
    def _clean(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        # Keep the nulls at the top level (they clear fields); clean nested documents.
        return {k: (v if k == "data" else _drop_nones(v)) for k, v in data.items()}


class TaskCreateSchema(TaskSchema):
    @post_load
    def _clean(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return dict(_drop_nones(data))


class TaskPatchSchema(TaskSchema):
    @post_load
    def _clean(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {k: _drop_nones(v) for k, v in data.items()}


class ResumeSchema(Strict):
    retryFailed = StrictBoolean(load_default=False)


class ListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    status = fields.String(validate=validate.OneOf([s.value for s in MissionStatus]))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0))


class PageQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0))


MISSION = MissionSchema()
MISSION_PATCH = MissionPatchSchema(partial=True)
TASK = TaskCreateSchema()
TASK_PATCH = TaskPatchSchema(partial=True)
RESUME = ResumeSchema()
LIST_QUERY = ListQuerySchema()
PAGE_QUERY = PageQuerySchema()
