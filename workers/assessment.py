"""Scoring a task's output against its expectations.

Each expectation gives a score from 1 to 5 and a reason: ``criterion`` expectations are scored by
the judge (the mission's ``assessor``, else ``MISSIONS_JUDGE_MODEL``, else the task agent's own
model); deterministic checks (``contains``, ``regex``, ``json_schema``, ``command``) score 5 when
they hold and 1 when they do not. The task's score is the weighted mean. A judge that cannot
score gives an error instead of a number: a score is never invented.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from orchestrator.spec import Expectation

PASS, FAIL = 5.0, 1.0


@dataclass(frozen=True)
class Judgement:
    score: float | None
    criteria: tuple[Mapping[str, Any], ...] = ()
    error: str | None = None


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
    extra: dict[str, Any] = field(default_factory=dict)


def _label(expectation: Expectation) -> str:
    doc = expectation.document
    return str(doc.get("name") or doc.get("criterion") or doc.get("value") or doc.get("pattern") or doc.get("run")
               or expectation.type)


def check(expectation: Expectation, output: str, ctx: AssessmentContext) -> tuple[float, str]:
    """A deterministic check: (5, why) when it holds, (1, why) when it does not."""
    doc = expectation.document
    match expectation.type:
        case "contains":
            needle = str(doc["value"])
            found = needle.lower() in output.lower() if doc.get("ignoreCase") else needle in output
            return (PASS, f"output contains {needle!r}") if found else (FAIL, f"output does not contain {needle!r}")
        case "regex":
            flags = re.IGNORECASE if doc.get("ignoreCase") else 0
            if re.search(str(doc["pattern"]), output, flags):
                return PASS, f"output matches /{doc['pattern']}/"
            return FAIL, f"output does not match /{doc['pattern']}/"
        case "json_schema":
            try:
                value = json.loads(output)
            except json.JSONDecodeError as exc:
                return FAIL, f"output is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            try:
                jsonschema.validate(value, doc["schema"])
            except jsonschema.ValidationError as exc:
                where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
                return FAIL, f"output does not match the schema at {where}: {exc.message}"
            except jsonschema.SchemaError as exc:
                return FAIL, f"the expectation's schema is invalid: {exc.message}"
            return PASS, "output matches the JSON schema"
        case "command":
            if not ctx.allow_commands:
                return FAIL, "command expectations are disabled on this server"
            timeout = float(doc.get("timeout") or ctx.command_timeout)
            try:
                done = subprocess.run(
                    ["/bin/sh", "-c", str(doc["run"])], cwd=ctx.workspace, input=output, text=True,
                    capture_output=True, timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                return FAIL, f"command timed out after {timeout:g} s"
            if done.returncode == 0:
                return PASS, "command exited 0"
            tail = (done.stderr or done.stdout).strip()[-500:]
            return FAIL, f"command exited {done.returncode}" + (f": {tail}" if tail else "")
        case other:
            raise ValueError(f"not a deterministic check: {other}")


def score_expectations(
    expectations: Sequence[Expectation], output: str, judge: Judgement | None, ctx: AssessmentContext
) -> Judgement:
    """Combine judge scores (for criteria, in order) and checks into the weighted task score."""
    results: list[dict[str, Any]] = []
    judged = iter(judge.criteria if judge is not None else ())
    for expectation in expectations:
        if expectation.type == "criterion":
            if judge is None or judge.error is not None:
                return Judgement(None, tuple(results), judge.error if judge else "no judge for the criteria")
            scored = next(judged, None)
            if scored is None:
                return Judgement(None, tuple(results), "the judge returned fewer scores than criteria")
            score, reason = float(scored["score"]), str(scored.get("reason", ""))
        else:
            score, reason = check(expectation, output, ctx)
        results.append({"type": expectation.type, "criterion": _label(expectation), "score": score,
                        "reason": reason, "weight": expectation.weight})
    total_weight = sum(r["weight"] for r in results)
    mean = sum(r["score"] * r["weight"] for r in results) / total_weight if total_weight else None
    return Judgement(round(mean, 4) if mean is not None else None, tuple(results))


def scripted_judge(request: JudgeRequest) -> Judgement:
    """The offline judge: the n-th assessment of a task plays step n of the assessor's script (the
    last repeating) and gives its score and reason to every criterion."""
    script = request.config.get("script") or []
    if not script:
        return Judgement(None, error=f"scripted judge {request.model} has no script: give the mission an "
                                     '"assessor" with {"model": "scripted/...", "script": [{"score": 4, "reason": "..."}]}')
    step = script[min(request.number, len(script)) - 1]
    if step.get("score") is None:
        return Judgement(None, error=f"step {min(request.number, len(script))} of the scripted judge has no score")
    score = float(step["score"])
    if not 1 <= score <= 5:
        return Judgement(None, error=f"scripted judge gave {score:g}, outside 1-5")
    reason = str(step.get("reason", ""))
    return Judgement(score, tuple({"criterion": c, "score": score, "reason": reason} for c in request.criteria))


def judge(request: JudgeRequest) -> Judgement:
    provider = request.model.split("/", 1)[0]
    if provider == "scripted":
        return scripted_judge(request)
    return Judgement(None, error=f'judge provider "{provider}" is not available on this server yet '
                                 f"(model {request.model}); use a scripted assessor")
