"""Request schemas: the type layer of validation.

Marshmallow checks shapes and types here (unknown fields are rejected and named, numbers must be
JSON numbers, strings have sane length limits); the rules that relate fields to each other
(references, cycles, ranges that depend on the team) live in ``orchestrator.validation``.
Loaded documents keep the API's camelCase keys: they are stored and served as they came in.

Below the types, ``parse_json`` decides what counts as JSON at all: text Postgres can store, numbers
that are numbers, a bounded nesting depth (see its docstring).
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates,
    validates_schema,
)

from orchestrator.engine import MissionStatus
from orchestrator.spec import ON_TIMEOUT_CHOICES, duration_seconds, format_timestamp, parse_timestamp
from orchestrator.validation import (
    MAX_BUDGET_TOKENS,
    MAX_BUDGET_USD,
    MAX_COMMAND_TIMEOUT,
    MAX_CONCURRENCY,
    MAX_RETRIES_LIMIT,
    MAX_SCORE,
    MAX_TASK_TIMEOUT,
    MAX_WAIT,
    MAX_WEIGHT,
    MIN_SCORE,
)
from workers.execution.assessment import schema_problem
from workers.support.errors import Invalid

NAME_MAX = 200
TEXT_MAX = 20_000
PROMPT_MAX = 100_000
LIST_MAX = 1_000
TITLES_MAX = 100_000  # the server's MISSIONS_MAX_TASKS rule is the real bound
MAX_DEPTH = 64  # objects and arrays inside each other, the body itself included
MAX_CURSOR = 400  # ?after= (a cursor from X-Next-Cursor is far shorter)
CURSOR_TEXT = (
    "A cursor from the previous page's X-Next-Cursor header: the page after it, read in index order "
    "(as cheap deep in the list as at its start)."
)
AFTER_TEXT = CURSOR_TEXT + " Not together with offset."
MAX_OFFSET = 2**31 - 1  # ?offset= (Postgres takes a bigint; no list is anywhere near this long)
_FIELDS_REPORTED = 20  # at most this many offending fields are named in one answer


def after_field(description: str = AFTER_TEXT) -> fields.String:
    """The ``?after=`` of a keyset-paged list: a cursor, decoded by ``api.http.cursors.after_from``."""
    return fields.String(validate=validate.Length(min=1, max=MAX_CURSOR), metadata={"description": description})


# -- The JSON layer: what a body may hold at all ----------------------------------------------
class _NotANumber:
    """Stands, while a body is checked, for a number JSON has no value for (``NaN``, ``Infinity``,
    or one beyond a double's range, such as ``1e400``)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


_LARGEST_INTEGER = int(sys.float_info.max)  # an integer beyond it has no value as a JSON number (a double)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _float(text: str) -> float | _NotANumber:
    value = float(text)
    return value if math.isfinite(value) else _NotANumber(text)


def _int(text: str) -> int | _NotANumber:
    if len(text) > 320:  # (more digits than the largest double has; int() would refuse past 4,300)
        return _NotANumber(text)
    value = int(text)
    return value if abs(value) <= _LARGEST_INTEGER else _NotANumber(text)


def parse_json(raw: bytes) -> Any:
    """The request body as JSON, or ``Invalid`` (400) naming what no field may hold, wherever it is
    (``data``, which is free-form, included): a NUL character or an unpaired surrogate in a string or
    an object key (Postgres stores neither), ``NaN``, ``Infinity`` or a number too large for a double
    (``1e400``; Python's json would take them), and objects and arrays nested more than
    ``MAX_DEPTH`` levels deep. Each offending field is named in ``details.fields``."""
    try:
        body = json.loads(raw, parse_constant=_NotANumber, parse_float=_float, parse_int=_int)
    except UnicodeDecodeError:
        raise Invalid("request body is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise Invalid(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            {"line": exc.lineno, "column": exc.colno},
        ) from None
    except RecursionError:  # (Python's parser gives up near 1,000 levels; the limit below is lower)
        problems = {"body": [f"nested more than {MAX_DEPTH} levels deep"]}
    else:
        problems = json_problems(body)
    if problems:
        first_field, first_messages = next(iter(problems.items()))
        more = f" (and {len(problems) - 1} more fields)" if len(problems) > 1 else ""
        raise Invalid(f"{first_field}: {first_messages[0]}{more}", {"fields": problems})
    return body


def json_problems(body: Any) -> dict[str, list[str]]:
    """What ``parse_json`` refuses in a parsed body, by field path (``tasks[0].title``): one walk,
    without recursion, so that no nesting can exhaust the stack."""
    problems: dict[str, list[str]] = {}
    # (value, depth of the container holding it, its path as a chain (parent, key) or None)
    stack: list[tuple[Any, int, Any]] = [(body, 0, None)]
    while stack and len(problems) < _FIELDS_REPORTED:
        value, depth, path = stack.pop()
        if isinstance(value, str):
            problem = text_problem(value)
            if problem is not None:
                problems.setdefault(_path(path), []).append(problem)
        elif isinstance(value, _NotANumber):
            problems.setdefault(_path(path), []).append(
                f"{value.text[:40]} is not a number JSON can carry (no NaN, no Infinity, nothing beyond ±1.8e308)"
            )
        elif isinstance(value, (dict, list)):
            if depth + 1 > MAX_DEPTH:
                problems.setdefault(_path(path), []).append(f"nested more than {MAX_DEPTH} levels deep")
                continue
            if isinstance(value, dict):
                children: list[tuple[Any, int, Any]] = []
                for key, item in value.items():
                    problem = text_problem(key)
                    if problem is not None:
                        problems.setdefault(_path(path), []).append(f"the key {json.dumps(key)} {problem}")
                    children.append((item, depth + 1, (path, key)))
            else:
                children = [(item, depth + 1, (path, index)) for index, item in enumerate(value)]
            stack.extend(reversed(children))  # (in document order)
    return problems


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored (a NUL character, an unpaired surrogate), or None."""
    if "\x00" in text:
        return "contains a NUL character"
    if not text.isascii():
        found = _SURROGATE.search(text)
        if found is not None:
            return f"contains an unpaired surrogate ({json.dumps(found.group())}), which is not Unicode text"
    return None


def printable(name: str) -> str:
    """``name``, escaped as in JSON when it holds what ``text_problem`` refuses."""
    return name if text_problem(name) is None else json.dumps(name)[1:-1]


def _path(path: Any) -> str:
    """``(((None, "tasks"), 0), "title")`` as ``tasks[0].title``; the body itself is ``body``."""
    keys: list[Any] = []
    while path is not None:
        path, key = path
        keys.append(key)
    out = ""
    for key in reversed(keys):
        if isinstance(key, int):
            out += f"[{key}]"
        else:
            name = printable(key)
            out += f".{name}" if out else name
    return out or "body"


# -- Types -------------------------------------------------------------------------------------
def checked(**bounds: float) -> dict[str, Any]:
    """The OpenAPI bounds (``minimum``, ``exclusiveMinimum``, ``maximum``...) of a number whose range
    the mission rules check (``orchestrator.validation``, with their own messages): documentation
    only, as field ``metadata``; the OpenAPI tests send each bound to the server."""
    return dict(bounds)


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


MAX_WAIT_SECONDS = MAX_WAIT  # a person's timeout, a delay (orchestrator.validation checks it too)


class Duration(fields.Field):  # type: ignore[type-arg]
    """A delay's length: a JSON number of seconds, or an ISO 8601 duration string of weeks, days,
    hours, minutes and seconds (``PT10M``); more than 0 and at most 366 days. Kept as given."""

    default_error_messages = {
        "invalid": "Not a duration: give seconds (a number) or an ISO 8601 duration such as PT10M.",
        "range": f"Must be more than 0 seconds and at most {MAX_WAIT_SECONDS} (366 days).",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, str))
            or (isinstance(value, str) and len(value) > 64)
        ):
            raise self.make_error("invalid")
        try:
            seconds = duration_seconds(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        if not (0 < seconds <= MAX_WAIT_SECONDS):
            raise self.make_error("range")
        return value


def wait_seconds() -> fields.Float:
    """How long something may wait for a person: more than 0 seconds, at most 366 days."""
    return StrictNumber(allow_none=True, validate=validate.Range(min=0, min_inclusive=False, max=MAX_WAIT_SECONDS))


def on_timeout() -> fields.String:
    return fields.String(validate=validate.OneOf(ON_TIMEOUT_CHOICES), allow_none=True)


def _not_blank(value: str) -> None:
    if value and not value.strip():
        raise ValidationError("Must not be only whitespace.")


def text(max_length: int, *, required: bool = False, allow_empty: bool = True) -> fields.String:
    """A string of at most ``max_length`` characters; with ``allow_empty=False`` (a name, a title, a
    model) neither empty nor only whitespace."""
    checks: list[Any] = [validate.Length(min=0 if allow_empty else 1, max=max_length)]
    if not allow_empty:
        checks.append(_not_blank)
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
    timeout = StrictNumber(
        allow_none=True,
        validate=validate.Range(min=0, min_inclusive=False),
        metadata=checked(maximum=MAX_COMMAND_TIMEOUT),
    )
    ignoreCase = StrictBoolean(allow_none=True)
    weight = StrictNumber(allow_none=True, metadata=checked(exclusiveMinimum=0, maximum=MAX_WEIGHT))

    @validates("json_schema")
    def _schema_can_check(self, value: Any, **_: Any) -> None:
        """A schema that is no valid JSON schema would score every attempt 1: refused when written."""
        problem = schema_problem(value) if isinstance(value, dict) else None
        if problem is not None:
            raise ValidationError(problem)


class OutcomeSchema(Strict):
    name = text(NAME_MAX, required=True, allow_empty=False)
    type = fields.String(validate=validate.OneOf(["file", "text", "url", "json"]), allow_none=True)
    description = text(TEXT_MAX)
    path = text(TEXT_MAX)
    required = StrictBoolean(allow_none=True)


class RetryPolicySchema(Strict):
    fallbackAgent = text(NAME_MAX)
    escalateModel = text(NAME_MAX)
    escalateAfter = StrictInteger(
        allow_none=True, metadata={**checked(minimum=1), "description": "At most the task's `maxRetries`."}
    )
    backoff = StrictNumber(allow_none=True, validate=validate.Range(min=0, max=86_400))
    approvalTimeout = wait_seconds()
    onApprovalTimeout = on_timeout()


class TaskSchema(Strict):
    title = text(NAME_MAX, required=True, allow_empty=False)
    description = text(TEXT_MAX, required=True)
    assignTo = text(NAME_MAX, required=True, allow_empty=False)
    dependsOn = titles(allow_none=True)
    expectations = fields.List(fields.Nested(ExpectationSchema), validate=validate.Length(max=100), allow_none=True)
    expectedOutcomes = fields.List(fields.Nested(OutcomeSchema), validate=validate.Length(max=100), allow_none=True)
    maxRetries = StrictInteger(allow_none=True, metadata=checked(minimum=0, maximum=MAX_RETRIES_LIMIT))
    priority = StrictInteger(allow_none=True, validate=validate.Range(min=-1_000_000, max=1_000_000))
    sideEffects = StrictBoolean(allow_none=True)
    timeout = StrictNumber(allow_none=True, metadata=checked(exclusiveMinimum=0, maximum=MAX_TASK_TIMEOUT))
    retryPolicy = fields.Nested(RetryPolicySchema, allow_none=True)


class ScriptStepSchema(Strict):
    output = text(PROMPT_MAX)
    outputChunks = fields.List(
        fields.String(validate=validate.Length(max=PROMPT_MAX)), validate=validate.Length(max=10_000), allow_none=True
    )
    delay = StrictNumber(allow_none=True, validate=validate.Range(min=0, max=86_400))
    fail = text(TEXT_MAX)
    # A scripted judge scores 1-5 and never invents a score: one outside that range is refused here,
    # not found at run time.
    score = StrictNumber(allow_none=True, validate=validate.Range(min=MIN_SCORE, max=MAX_SCORE))
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
    maxConcurrency = StrictInteger(allow_none=True, metadata=checked(minimum=1, maximum=MAX_CONCURRENCY))
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
    minScore = StrictNumber(allow_none=True, metadata=checked(minimum=MIN_SCORE, maximum=MAX_SCORE))
    requireAllPassed = StrictBoolean(allow_none=True)


class CheckpointSchema(Strict):
    name = text(NAME_MAX)
    afterTasks = titles(required=True)
    blocksTasks = titles(allow_none=True)
    message = text(TEXT_MAX)
    timeout = wait_seconds()
    onTimeout = on_timeout()


class DelaySchema(Strict):
    name = text(NAME_MAX)
    afterTasks = titles(required=True)
    blocksTasks = titles(required=True)
    duration = Duration(required=True)


def _drop_nones(value: Any) -> Any:
    """Null optional fields mean 'not given' inside a document."""
    if isinstance(value, dict):
        return {k: _drop_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nones(v) for v in value]
    return value


class BudgetSchema(Strict):
    maxCostUsd = StrictNumber(
        allow_none=True,
        validate=validate.Range(min=0, min_inclusive=False),
        metadata=checked(maximum=MAX_BUDGET_USD),
    )
    maxTokens = StrictInteger(
        allow_none=True, validate=validate.Range(min=1), metadata=checked(maximum=MAX_BUDGET_TOKENS)
    )


class MissionSchema(Strict):
    name = text(NAME_MAX, required=True, allow_empty=False)
    prompt = text(PROMPT_MAX)
    data = fields.Raw(allow_none=True)
    tasks = fields.List(fields.Nested(TaskSchema), required=True)
    team = fields.Nested(TeamSchema, allow_none=True)
    qualityThreshold = StrictNumber(allow_none=True, metadata=checked(minimum=MIN_SCORE, maximum=MAX_SCORE))
    deadline = Timestamp(allow_none=True)
    schedule = text(NAME_MAX)
    timezone = text(NAME_MAX)
    qualityGates = fields.List(fields.Nested(GateSchema), validate=validate.Length(max=LIST_MAX), allow_none=True)
    checkpoints = fields.List(fields.Nested(CheckpointSchema), validate=validate.Length(max=LIST_MAX), allow_none=True)
    assessor = fields.Nested(AssessorSchema, allow_none=True)
    maxConcurrency = StrictInteger(allow_none=True, metadata=checked(minimum=1, maximum=MAX_CONCURRENCY))
    endDate = Timestamp(allow_none=True)
    catchUp = fields.String(validate=validate.OneOf(["skip", "latest"]), allow_none=True)
    deadlineAfter = StrictNumber(allow_none=True, validate=validate.Range(min=0, min_inclusive=False, max=366 * 86_400))
    budget = fields.Nested(BudgetSchema, allow_none=True)
    scheduleData = fields.Dict(
        allow_none=True,
        metadata={
            "description": "Per-run data for the runs the schedule starts, merged over `data` at the top level "
            "(like `POST /execute`'s `data`)."
        },
    )
    delays = fields.List(fields.Nested(DelaySchema), validate=validate.Length(max=LIST_MAX), allow_none=True)
    approvalTimeout = wait_seconds()
    onApprovalTimeout = on_timeout()

    @post_load
    def _clean(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        # `data` and `scheduleData` are free-form user JSON: their nulls are content, not absent fields.
        payloads = {key: data.pop(key, None) for key in ("data", "scheduleData")}
        cleaned = _drop_nones(data)
        cleaned.update({key: value for key, value in payloads.items() if value is not None})
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
        return {k: (v if k in ("data", "scheduleData") else _drop_nones(v)) for k, v in data.items()}


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


class Include(fields.String):
    """``?include=a,b``: extra fields a list answers with, out of ``choices``, loaded as a frozenset.

    The public docs show list items with exactly their keys, so anything more is asked for by name
    (as Stripe's ``expand``): a client that reads the documented shape never sees a key it does not
    know.
    """

    def __init__(self, choices: tuple[str, ...], **kwargs: Any) -> None:
        self.choices = choices
        names = ", ".join(f"`{c}`" for c in choices)
        kwargs.setdefault("load_default", frozenset)  # (a callable: apispec shows no default)
        kwargs.setdefault("metadata", {})
        kwargs["metadata"].setdefault("description", f"Comma-separated extra fields: {names}.")
        super().__init__(validate=validate.Length(max=NAME_MAX), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> frozenset[str]:  # type: ignore[override]
        text = super()._deserialize(value, attr, data, **kwargs)
        names = frozenset(n.strip() for n in text.split(",") if n.strip())
        unknown = sorted(names - set(self.choices))
        if unknown:
            raise ValidationError(f"unknown {', '.join(unknown)}; choose from {', '.join(self.choices)}")
        return names


MISSION_LIST_EXTRAS = ("lastRun", "nextRunAt")
RESUMABLE_EXTRAS = ("waitingFor",)
RUN_EXTRAS = ("attempts", "graph")
RUN_LIST_EXTRAS = ("summary",)


class ExecuteSchema(Strict):
    data = fields.Dict(
        allow_none=True,
        metadata={
            "description": "This run's own data, merged over the mission's `data` at the top level (each key "
            "replaces the mission's key of that name); recorded on the run."
        },
    )


class ReviewSchema(Strict):
    """A person's decision at a checkpoint or a side-effect approval."""

    decision = fields.String(required=True, validate=validate.OneOf(["approve", "request_changes", "reject"]))
    feedback = text(TEXT_MAX)  # required to request changes; recorded with every decision
    redo = titles(
        allow_none=True,
        metadata={
            "description": "With request_changes: which afterTasks of the waiting checkpoint re-run (default all)."
        },
    )

    @validates_schema
    def _feedback_and_redo(self, data: dict[str, Any], **_: Any) -> None:
        decision = data.get("decision")
        if decision == "request_changes" and not (data.get("feedback") or "").strip():
            raise ValidationError("request_changes needs feedback: what should change", "feedback")
        if data.get("redo") and decision != "request_changes":
            raise ValidationError("redo goes with request_changes", "redo")


class ListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    status = fields.String(validate=validate.OneOf([s.value for s in MissionStatus]))
    q = fields.String(
        validate=validate.Length(max=NAME_MAX),
        metadata={"description": "Only missions whose name contains this text, ignoring case (empty: all)."},
    )
    include = Include(MISSION_LIST_EXTRAS)
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_OFFSET))
    after = after_field()


class ResumableQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    include = Include(RESUMABLE_EXTRAS)


class RunQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    include = Include(RUN_EXTRAS)


class PageQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_OFFSET))
    after = after_field()


class EventsPageQuerySchema(Schema):
    """The JSON page of a run's events (``Accept: application/json``); the stream takes neither."""

    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    after = after_field()


class AttemptsQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    after = after_field(CURSOR_TEXT)
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))


class RunListQuerySchema(PageQuerySchema):
    include = Include(RUN_LIST_EXTRAS)


MISSION = MissionSchema()
MISSION_PATCH = MissionPatchSchema(partial=True)
TASK = TaskCreateSchema()
TASK_PATCH = TaskPatchSchema(partial=True)
RESUME = ResumeSchema()
EXECUTE = ExecuteSchema()
REVIEW = ReviewSchema()
LIST_QUERY = ListQuerySchema()
PAGE_QUERY = PageQuerySchema()
EVENTS_PAGE_QUERY = EventsPageQuerySchema()
RESUMABLE_QUERY = ResumableQuerySchema()
RUN_QUERY = RunQuerySchema()
RUN_LIST_QUERY = RunListQuerySchema()
ATTEMPTS_QUERY = AttemptsQuerySchema()
