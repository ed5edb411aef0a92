"""Mission documents for the end-to-end tests, all on scripted agents."""

from __future__ import annotations

import copy
from typing import Any

from tests.fixtures.examples import CODE_REVIEW_PIPELINE, DEPLOY_PIPELINE

PASSING_JUDGE = {"model": "scripted/judge", "script": [{"score": 4.5, "reason": "meets the bar"}]}


def scripted(example: dict[str, Any], judge: dict[str, Any] | None = None) -> dict[str, Any]:
    """A public example with every agent on the scripted provider and a scripted judge."""
    doc = copy.deepcopy(example)
    for agent in doc["team"]["agents"]:
        agent["model"] = "scripted/" + agent["model"].split("/", 1)[1]
        agent["script"] = [{"outputChunks": [f"{agent['name']} ", "done"]}]
    doc["assessor"] = judge or PASSING_JUDGE
    return doc


def deploy_pipeline() -> dict[str, Any]:
    return scripted(DEPLOY_PIPELINE)


def code_review_pipeline() -> dict[str, Any]:
    return scripted(CODE_REVIEW_PIPELINE)


def mission(name: str, tasks: list[dict[str, Any]], agents: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    for task in tasks:
        task.setdefault("description", f"Do {task['title']}")
    return {
        "name": name,
        "prompt": f"Mission {name}",
        "tasks": tasks,
        "team": {"name": "crew", "volatile": True, "agents": agents},
        **extra,
    }


def agent(name: str, *steps: dict[str, Any], model: str = "scripted/basic") -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "role": f"{name} role", "model": model}
    if steps:
        out["script"] = list(steps)
    return out
