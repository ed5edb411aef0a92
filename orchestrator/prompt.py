"""What an agent sees (DESIGN §4 "Data flow"), pure.

An attempt's prompt is fixed when the attempt is created: by then every dependency has completed
(so their outputs are final), the feedback of the earlier attempts is known, and the task can no
longer change (only a task that never started may be updated). The coordinator therefore builds
it in the step that starts the attempt and stores it with the attempt row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.spec import MissionSpec, TaskSpec

DEPENDENCY_OUTPUT_LIMIT = 20_000  # characters of one dependency's output a prompt carries


def outcome_kind(outcome: Mapping[str, Any]) -> str:
    """An expected outcome's type; without one, ``file`` when it has a ``path``, else ``text``."""
    kind = outcome.get("type")
    if isinstance(kind, str) and kind:
        return kind
    return "file" if outcome.get("path") else "text"


def describe_outcome(outcome: Mapping[str, Any]) -> str:
    kind = outcome_kind(outcome)
    where = f" at {outcome['path']}" if outcome.get("path") else ""
    required = ", required" if outcome.get("required") else ""
    description = f": {outcome['description']}" if outcome.get("description") else ""
    return f"- {outcome.get('name')} ({kind}{where}{required}){description}"


def build_prompt(
    spec: MissionSpec,
    task: TaskSpec,
    outputs: Mapping[str, str],
    feedback: Sequence[str] = (),
    review: Sequence[str] = (),
    previous_output: str | None = None,
) -> str:
    """The mission prompt and data, the task with its expectations and expected outcomes, the
    outputs of its dependencies by title (each cut at ``DEPENDENCY_OUTPUT_LIMIT``), on a retry
    why the earlier attempts failed, and when a reviewer asked for changes (``review``) the
    task's previous output and what the reviewer said."""
    parts: list[str] = []
    if spec.prompt:
        parts.append(f"# Mission\n{spec.prompt}")
    if spec.data is not None:
        parts.append("# Mission data\n" + json.dumps(spec.data, indent=2, ensure_ascii=False))
    parts.append(f"# Your task: {task.title}\n{task.description}")
    criteria = [e.criterion or e.document.get("name") or e.type for e in task.expectations]
    if criteria:
        parts.append("# Expectations\n" + "\n".join(f"- {c}" for c in criteria))
    if task.expected_outcomes:
        parts.append("# Expected outcomes\n" + "\n".join(describe_outcome(o) for o in task.expected_outcomes))
    parts.extend(f"# Output of {title!r}\n{_cut(outputs.get(title, ''))}" for title in task.depends_on)
    if feedback:
        parts.append("# Earlier attempts failed\n" + "\n".join(f"- {f}" for f in feedback))
    if review:
        if previous_output:
            parts.append(f"# Your previous output\n{_cut(previous_output)}")
        parts.append("# A reviewer asked for changes\n" + "\n".join(f"- {r}" for r in review))
    return "\n\n".join(parts)


def _cut(text: str) -> str:
    if len(text) <= DEPENDENCY_OUTPUT_LIMIT:
        return text
    return text[:DEPENDENCY_OUTPUT_LIMIT] + f"\n[... cut: {len(text) - DEPENDENCY_OUTPUT_LIMIT} more characters]"
