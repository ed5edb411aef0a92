"""Scoring a task's output against its expectations.

Each expectation gives a score from 1 to 5 and a reason: ``criterion`` expectations are scored by
the judge (the mission's ``assessor``, else ``MISSIONS_JUDGE_MODEL``, else the task agent's own
model); deterministic checks (``contains``, ``regex``, ``json_schema``, ``command``) score 5 when
they hold and 1 when they do not. The task's score is the weighted mean. A judge that cannot
score gives an error instead of a number: a score is never invented.

A model judge is asked to call a ``submit_scores`` tool with one ``{index, criterion, score,
reason}`` per criterion (a reply in plain JSON text is accepted too). Its answer is parsed
strictly (every criterion scored once, scores numbers from 1 to 5); when it is unusable the judge
gets one repair turn that says what was wrong, and after that the assessment fails with that
reason. Nothing a judge sends can raise out of ``judge``.

Tenant patterns are bounded: a ``regex`` expectation and a JSON schema's ``pattern``,
``patternProperties`` (and the ``additionalProperties``/``unevaluatedProperties`` that match them)
run in the ``regex`` engine with the GIL released and at most ``AssessmentContext.pattern_timeout``
seconds per check (``MISSIONS_PATTERN_TIMEOUT_SECONDS``; ``workers/execution/patterns.py``); a
pattern that runs out of time fails its check (score 1, "pattern took longer than N s on the
output"). A JSON schema's ``$ref`` is resolved only inside the schema: a reference to any other
document (http, https, file, a relative name) is never fetched and fails the check.

``missing_outcomes`` checks a task's ``expectedOutcomes`` marked ``required`` after its agent
finished: files must exist in the run's workspace (an attempt that lacks one fails with a clear
error, whether or not the task has expectations).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema.exceptions
import referencing.exceptions
from referencing import Registry, Resource

from config import Settings
from orchestrator.failures import ErrorCode
from orchestrator.prompt import outcome_kind
from orchestrator.spec import Expectation
from workers.execution import patterns
from workers.execution.providers import MODEL_PROVIDERS, Providers, split_model
from workers.execution.providers.base import (
    AssistantMessage,
    Cancelled,
    Message,
    ProviderError,
    ToolResult,
    ToolResults,
    ToolSpec,
    Turn,
    TurnRequest,
    Usage,
    UserMessage,
    call_model,
)
from workers.execution.providers.tools import inside, run_command

log = logging.getLogger(__name__)

PASS, FAIL = 5.0, 1.0
MIN_SCORE, MAX_SCORE = 1.0, 5.0
JUDGE_OUTPUT_LIMIT = 60_000  # characters of the output shown to a judge
JUDGE_MAX_TOKENS = 2048


@dataclass(frozen=True)
class Judgement:
    score: float | None
    criteria: tuple[Mapping[str, Any], ...] = ()
    error: str | None = None
    tokens_in: int = 0  # what the judge's calls used
    tokens_out: int = 0
    cost_usd: float = 0.0
    # Why the judge failed, when it did: what decides whether a retry of the task is spent on it.
    error_code: ErrorCode = ErrorCode.ASSESSMENT_FAILED


@dataclass(frozen=True)
class JudgeRequest:
    """What a judge needs: the criteria to score, the output, and which assessment this is (1-based)."""

    model: str
    config: Mapping[str, Any]
    criteria: Sequence[str]
    output: str
    number: int
    task_title: str = ""
    description: str = ""


@dataclass
class AssessmentContext:
    allow_commands: bool = False
    workspace: Path | None = None
    command_timeout: float = 60.0
    pattern_timeout: float = patterns.DEFAULT_TIMEOUT  # settings.pattern_timeout_seconds
    extra: dict[str, Any] = field(default_factory=dict)


def _label(expectation: Expectation) -> str:
    doc = expectation.document
    return str(
        doc.get("name")
        or doc.get("criterion")
        or doc.get("value")
        or doc.get("pattern")
        or doc.get("run")
        or expectation.type
    )


def check(expectation: Expectation, output: str, ctx: AssessmentContext) -> tuple[float, str]:
    """A deterministic check: (5, why) when it holds, (1, why) when it does not."""
    doc = expectation.document
    match expectation.type:
        case "contains":
            needle = str(doc["value"])
            found = needle.lower() in output.lower() if doc.get("ignoreCase") else needle in output
            return (PASS, f"output contains {needle!r}") if found else (FAIL, f"output does not contain {needle!r}")
        case "regex":
            flags = patterns.IGNORECASE if doc.get("ignoreCase") else 0
            try:
                found = patterns.search(str(doc["pattern"]), output, patterns.Budget(ctx.pattern_timeout), flags)
            except patterns.PatternTimeout:
                return FAIL, _too_slow(ctx.pattern_timeout)
            except patterns.PatternError as exc:
                return FAIL, f"the expectation's pattern is invalid: {exc}"
            if found:
                return PASS, f"output matches /{doc['pattern']}/"
            return FAIL, f"output does not match /{doc['pattern']}/"
        case "json_schema":
            try:
                value = json.loads(output)
            except json.JSONDecodeError as exc:
                return FAIL, f"output is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            return check_json_schema(value, doc["schema"], ctx.pattern_timeout)
        case "command":
            if not ctx.allow_commands:
                return FAIL, "command expectations are disabled on this server"

            timeout = float(doc.get("timeout") or ctx.command_timeout)
            workspace = ctx.workspace or Path.cwd()
            code, text, timed_out = run_command(str(doc["run"]), workspace, timeout, stdin=output)
            if timed_out:
                return FAIL, f"command timed out after {timeout:g} s"
            if code == 0:
                return PASS, "command exited 0"
            tail = text.strip()[-500:]
            return FAIL, f"command exited {code}" + (f": {tail}" if tail else "")
        case other:
            raise ValueError(f"not a deterministic check: {other}")


def _too_slow(timeout: float) -> str:
    return f"pattern took longer than {timeout:g} s on the output"


class _RemoteRef(Exception):
    pass


def schema_problem(schema: Any) -> str | None:
    """Why ``schema`` can never check an output (it is not a valid JSON schema of its draft, or one
    of its patterns cannot compile), or None: what the API refuses when a mission is written, where
    ``check_json_schema`` would otherwise score every attempt 1."""
    try:
        cls = patterns.validator_class(schema)
        cls.check_schema(schema, format_checker=patterns.format_checker(cls.FORMAT_CHECKER))
    except jsonschema.SchemaError as exc:
        return f"the schema is invalid: {exc.message}"
    except patterns.PatternError as exc:
        return f"the schema is invalid: {exc}"
    except RecursionError:
        return "the schema is nested too deeply"
    return None


def check_json_schema(value: Any, schema: Any, pattern_timeout: float = patterns.DEFAULT_TIMEOUT) -> tuple[float, str]:
    """``value`` against a tenant's ``schema``: patterns bounded, no document fetched for a ``$ref``."""
    remote: list[str] = []

    def refuse(uri: str) -> Resource[Any]:
        remote.append(uri)
        raise _RemoteRef(uri)

    try:
        cls = patterns.validator_class(schema)
        cls.check_schema(schema, format_checker=patterns.format_checker(cls.FORMAT_CHECKER))
        with patterns.budget(pattern_timeout):
            validator = cls(schema, registry=Registry(retrieve=refuse))  # type: ignore[call-arg]
            error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    except jsonschema.SchemaError as exc:
        return FAIL, f"the expectation's schema is invalid: {exc.message}"
    except patterns.PatternTimeout:
        return FAIL, _too_slow(pattern_timeout)
    except patterns.PatternError as exc:
        return FAIL, f"the expectation's schema is invalid: {exc}"
    except RecursionError:
        return FAIL, "the expectation's schema refers to itself without end"
    except referencing.exceptions.Unresolvable as exc:
        if remote:
            return FAIL, f"$ref to a remote document is not allowed: {remote[0][:200]}"
        return FAIL, f"the expectation's schema has a $ref that cannot be resolved: {str(exc)[:200]}"
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return FAIL, f"output does not match the schema at {where}: {error.message}"
    return PASS, "output matches the JSON schema"


def score_expectations(
    expectations: Sequence[Expectation], output: str, judge: Judgement | None, ctx: AssessmentContext
) -> Judgement:
    """Combine judge scores (for criteria, in order) and checks into the weighted task score."""
    results: list[dict[str, Any]] = []
    judged = iter(judge.criteria if judge is not None else ())
    for expectation in expectations:
        if expectation.type == "criterion":
            if judge is None or judge.error is not None:
                if judge is None:
                    return Judgement(None, tuple(results), "no judge for the criteria")
                return Judgement(None, tuple(results), judge.error, error_code=judge.error_code)
            scored = next(judged, None)
            if scored is None:
                return Judgement(None, tuple(results), "the judge returned fewer scores than criteria")
            score, reason = float(scored["score"]), str(scored.get("reason", ""))
        else:
            score, reason = check(expectation, output, ctx)
        results.append(
            {
                "type": expectation.type,
                "criterion": _label(expectation),
                "score": score,
                "reason": reason,
                "weight": expectation.weight,
            }
        )
    total_weight = sum(r["weight"] for r in results)
    mean = sum(r["score"] * r["weight"] for r in results) / total_weight if total_weight else None
    return Judgement(round(mean, 4) if mean is not None else None, tuple(results))


def scripted_judge(request: JudgeRequest) -> Judgement:
    """The offline judge: the n-th assessment of a task plays step n of the assessor's script (the
    last repeating) and gives its score and reason to every criterion."""
    script = request.config.get("script") or []
    if not script:
        return Judgement(
            None,
            error=f"scripted judge {request.model} has no script: give the mission an "
            '"assessor" with {"model": "scripted/...", "script": [{"score": 4, "reason": "..."}]}',
            error_code=ErrorCode.CONFIGURATION_ERROR,
        )
    step = script[min(request.number, len(script)) - 1]
    if step.get("score") is None:
        return Judgement(
            None,
            error=f"step {min(request.number, len(script))} of the scripted judge has no score",
            error_code=ErrorCode.CONFIGURATION_ERROR,
        )
    score = float(step["score"])
    if not 1 <= score <= 5:
        return Judgement(
            None, error=f"scripted judge gave {score:g}, outside 1-5", error_code=ErrorCode.CONFIGURATION_ERROR
        )
    reason = str(step.get("reason", ""))
    return Judgement(score, tuple({"criterion": c, "score": score, "reason": reason} for c in request.criteria))


def judge(
    request: JudgeRequest, providers: Providers | None = None, cancel: threading.Event | None = None
) -> Judgement:
    """Score ``request.criteria``: scripted judges offline, anthropic/openai judges by a model call."""
    provider = request.model.split("/", 1)[0]
    if provider == "scripted":
        return scripted_judge(request)

    if provider not in MODEL_PROVIDERS:
        return Judgement(
            None,
            error=f"judge model {request.model!r}: unknown provider {provider!r}",
            error_code=ErrorCode.CONFIGURATION_ERROR,
        )
    if providers is None:
        providers = Providers(Settings.from_env())
    try:
        return model_judge(request, providers, cancel or threading.Event())
    except Exception as exc:  # a judge never crashes a worker
        log.exception("judge %s crashed", request.model)
        return Judgement(None, error=f"judge {request.model} failed unexpectedly: {exc.__class__.__name__}: {exc}")


# --------------------------------------------------------------------------------------------
# Model judges

JUDGE_SYSTEM = (
    "You are a strict, fair assessor. Score the work below against each numbered criterion, from 1 "
    "(not met at all) to 5 (fully met); use whole or half points. Give a short, specific reason for "
    "each score that says what is missing when the score is below 5. Reply only by calling the "
    "submit_scores tool, with exactly one entry per criterion."
)


def _submit_scores_tool(count: int) -> Any:

    return ToolSpec(
        "submit_scores",
        "Submit one score with its reason for every criterion.",
        {
            "type": "object",
            "properties": {
                "scores": {
                    "type": "array",
                    "minItems": count,
                    "maxItems": count,
                    "items": {
                        "type": "object",
                        "properties": {
                            "index": {"type": "integer", "description": "the criterion's number, from 1"},
                            "criterion": {"type": "string"},
                            "score": {"type": "number", "minimum": MIN_SCORE, "maximum": MAX_SCORE},
                            "reason": {"type": "string"},
                        },
                        "required": ["index", "score", "reason"],
                    },
                }
            },
            "required": ["scores"],
        },
    )


def judge_prompt(request: JudgeRequest) -> str:
    output = request.output
    if len(output) > JUDGE_OUTPUT_LIMIT:
        output = output[:JUDGE_OUTPUT_LIMIT] + f"\n[... cut: {len(output) - JUDGE_OUTPUT_LIMIT} more characters]"
    criteria = "\n".join(f"{i}. {c}" for i, c in enumerate(request.criteria, 1))
    return (
        f"# Task: {request.task_title}\n{request.description}\n\n"
        f"# The work to assess\n<output>\n{output}\n</output>\n\n"
        f"# Criteria\n{criteria}\n\n"
        f"Call submit_scores with {len(request.criteria)} entries, one per criterion, each with its index, "
        "a score from 1 to 5 and a reason."
    )


def model_judge(request: JudgeRequest, providers: Providers, cancel: threading.Event) -> Judgement:
    """Ask a model for the scores; one repair turn when the answer is unusable."""

    usage = Usage()

    def verdict(
        score: float | None,
        criteria: tuple[Mapping[str, Any], ...] = (),
        error: str | None = None,
        code: ErrorCode = ErrorCode.ASSESSMENT_FAILED,
    ) -> Judgement:
        return Judgement(
            score, criteria, error, usage.tokens_in, usage.tokens_out, providers.cost(request.model, usage), code
        )

    try:
        client = providers.client(request.model, request.config)
    except ProviderError as exc:
        return verdict(None, error=f"judge: {exc.message}", code=exc.code)
    extra = str(request.config.get("systemPrompt") or "").strip()
    system = JUDGE_SYSTEM + ("\n\n" + extra if extra else "")
    tool = _submit_scores_tool(len(request.criteria))
    messages: list[Message] = [UserMessage(judge_prompt(request))]
    problem = ""
    try:
        for round_ in range(2):
            turn = call_model(
                client,
                TurnRequest(
                    model=split_model(request.model)[1],
                    system=system,
                    messages=tuple(messages),
                    tools=(tool,),
                    force_tool=tool.name,
                    max_tokens=JUDGE_MAX_TOKENS,
                    temperature=None,
                    stream=False,
                ),
                cancel,
                None,
                providers.retry_policy,
            )
            usage += turn.usage
            parsed = parse_verdict(turn, request.criteria)
            if not isinstance(parsed, str):
                mean = sum(c["score"] for c in parsed) / len(parsed) if parsed else None
                return verdict(mean, tuple(parsed))
            problem = parsed
            log.info("judge %s gave an unusable answer (round %d): %s", request.model, round_ + 1, problem)
            fix = (
                f"Your answer could not be used: {problem}. Call submit_scores again with exactly "
                f"{len(request.criteria)} entries, one per criterion, each with index, score (a number from 1 "
                "to 5) and reason."
            )
            messages.append(AssistantMessage(turn.text, turn.tool_calls))
            if turn.tool_calls:
                messages.append(ToolResults(tuple(ToolResult(c.id, c.name, fix, True) for c in turn.tool_calls)))
            else:
                messages.append(UserMessage(fix))
    except Cancelled:
        return verdict(None, error="the assessment was cancelled")
    except ProviderError as exc:
        return verdict(None, error=f"judge {request.model}: {exc.message}", code=exc.code)
    finally:
        client.close()
    return verdict(None, error=f"judge {request.model} gave no usable scores, even after a repair request: {problem}")


def parse_verdict(turn: Turn, criteria: Sequence[str]) -> list[dict[str, Any]] | str:
    """The per-criterion results of a judge's turn, or what is wrong with it."""
    if turn.tool_calls:
        call = next((c for c in turn.tool_calls if c.name == "submit_scores"), turn.tool_calls[0])
        if call.arguments is None:
            return f"the submit_scores arguments are not a JSON object: {call.raw[:200]!r}"
        return parse_scores(call.arguments, criteria)
    payload = extract_json(turn.text)
    if payload is None:
        shown = turn.text.strip()[:200] or "(empty)"
        return f"the reply called no tool and holds no JSON scores: {shown!r}"
    return parse_scores(payload, criteria)


def extract_json(text: str) -> Any | None:
    """The first JSON object or array in ``text`` (bare, or inside a code fence), else None."""
    stripped = text.strip()
    if not stripped:
        return None
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", stripped):
        try:
            value, _ = decoder.raw_decode(stripped, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, (dict, list)):
            return value
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _normal(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .")


def parse_scores(payload: Any, criteria: Sequence[str]) -> list[dict[str, Any]] | str:
    """``{"scores": [{index, criterion, score, reason}, ...]}`` (or the bare list) matched to
    ``criteria``: a list of ``{"criterion", "score", "reason"}`` in criteria order, or what is wrong.

    An entry finds its criterion by ``index`` (1-based), else by the criterion's text, else by its
    position when there is exactly one entry per criterion. Every criterion needs exactly one
    score, a number from 1 to 5.
    """
    items: Any = payload
    if isinstance(payload, Mapping):
        if "scores" in payload:
            items = payload["scores"]
        elif "score" in payload and len(criteria) == 1:
            items = [payload]
    if not isinstance(items, list):
        return 'expected {"scores": [...]} with one entry per criterion'
    results: list[dict[str, Any] | None] = [None] * len(criteria)
    normal = [_normal(c) for c in criteria]
    for position, item in enumerate(items):
        if not isinstance(item, Mapping):
            return f"entry {position + 1} of scores is not an object"
        score = _number(item.get("score"))
        if score is None:
            return f"entry {position + 1} of scores has no numeric score (got {item.get('score')!r})"
        slot: int | None = None
        index = _number(item.get("index"))
        named = item.get("criterion")
        if index is not None and index.is_integer() and 1 <= index <= len(criteria):
            slot = int(index) - 1
        elif isinstance(named, str) and _normal(named) in normal:
            wanted = _normal(named)
            slot = next((i for i, n in enumerate(normal) if n == wanted and results[i] is None), normal.index(wanted))
        elif len(items) == len(criteria):
            slot = position
        if slot is None:
            return f"entry {position + 1} of scores names no known criterion (index {item.get('index')!r})"
        if not MIN_SCORE <= score <= MAX_SCORE:
            return f"the score {score:g} for criterion {slot + 1} is outside 1-5"
        if results[slot] is not None:
            return f"criterion {slot + 1} is scored twice"
        reason = item.get("reason")
        results[slot] = {
            "criterion": criteria[slot],
            "score": score,
            "reason": reason.strip() if isinstance(reason, str) else "",
        }
    missing = [str(i + 1) for i, r in enumerate(results) if r is None]
    if missing:
        return f"no score for criteria {', '.join(missing)} (of {len(criteria)})"
    return [r for r in results if r is not None]


# --------------------------------------------------------------------------------------------
# Expected outcomes


def missing_outcomes(expected: Sequence[Mapping[str, Any]], output: str, workspace: Path | None) -> list[str]:
    """Why each ``required`` expected outcome was not produced (empty when all were).

    ``file``: a file at ``path`` (else named like the outcome) in the workspace; ``json``: that
    file, or else the output, parses as JSON; ``url``: the output holds an http(s) URL; ``text``:
    the output is not empty.
    """
    problems: list[str] = []
    for outcome in expected:
        if not outcome.get("required"):
            continue
        name = str(outcome.get("name") or "")
        kind = outcome_kind(outcome)
        path = str(outcome.get("path") or (name if kind == "file" else ""))
        if kind in ("file", "json") and path:
            try:
                target = inside(workspace, path) if workspace is not None else None
            except ValueError as exc:
                problems.append(f"required outcome {name!r}: {exc}")
                continue
            if target is None or not target.is_file():
                problems.append(f"required outcome {name!r} was not produced: no file {path!r} in the workspace")
                continue
            if kind == "json":
                try:
                    json.loads(target.read_text(encoding="utf-8"))
                except (ValueError, OSError):
                    problems.append(f"required outcome {name!r}: {path!r} is not valid JSON")
        elif kind == "json":
            if extract_json(output) is None:
                problems.append(f"required outcome {name!r} was not produced: the output holds no JSON")
        elif kind == "url":
            if not re.search(r"https?://\S+", output):
                problems.append(f"required outcome {name!r} was not produced: the output holds no URL")
        elif not output.strip():
            problems.append(f"required outcome {name!r} was not produced: the output is empty")
    return problems
