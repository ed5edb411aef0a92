"""``missions demo``: a built-in mission on scripted agents that shows, offline and in about ten
seconds, what Missions does: parallel tasks, dependencies, a failed attempt that is retried, an
assessment, a quality gate that blocks once and is resumed with ``retryFailed`` (the low-scoring
draft is rewritten), and a checkpoint that the demo approves itself after showing it.

It runs against a server (``--url``/``--key`` or ``MISSIONS_URL``/``MISSIONS_KEY``), or, with
neither, against a private throw-away stack (embedded Postgres and Redis, API, worker and beat in
a temporary folder) that it removes when done.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from api.cli.client import ApiError, Client
from api.cli.live import Display, watch

# Seconds the demo leaves a checkpoint on screen before approving it, as a person would.
APPROVE_AFTER_SECONDS = 1.5

DRAFT = "Draft the announcement"
REVIEW = "Review the draft"


def demo_mission(suffix: str | None = None) -> dict[str, Any]:
    """The demo's mission document; ``suffix`` keeps its name unique in the project."""
    suffix = suffix or secrets.token_hex(3)
    return {
        "name": f"demo-release-announcement-{suffix}",
        "prompt": "Write and publish a short announcement for the Missions 1.0 release.",
        "data": {"product": "Missions", "version": "1.0", "audience": "developers"},
        "qualityThreshold": 3.0,
        "tasks": [
            {
                "title": "Research the release",
                "assignTo": "researcher",
                "description": "Read the changelog and list the headline features.",
            },
            {
                "title": "Collect user quotes",
                "assignTo": "analyst",
                "description": "Find two short quotes from early users.",
            },
            {
                "title": DRAFT,
                "assignTo": "writer",
                "maxRetries": 2,
                "dependsOn": ["Research the release", "Collect user quotes"],
                "description": "Write a 100-word announcement from the research and the quotes.",
                "expectations": [{"criterion": "Accurate, clear, and ends with a call to action"}],
            },
            {
                "title": REVIEW,
                "assignTo": "editor",
                "dependsOn": [DRAFT],
                "description": "Check facts and tone; answer Approved when it is ready.",
                "expectations": [{"type": "contains", "value": "Approved"}],
            },
            {
                "title": "Publish",
                "assignTo": "publisher",
                "dependsOn": [REVIEW],
                "description": "Post the announcement on the blog.",
            },
        ],
        "team": {
            "name": "demo-crew",
            "volatile": True,
            "agents": [
                {
                    "name": "researcher",
                    "role": "Finds the facts",
                    "model": "scripted/researcher",
                    "script": [
                        {
                            "delay": 0.8,
                            "outputChunks": [
                                "Reading the changelog...\n",
                                "Headline features: a live CLI, OpenAPI docs, ",
                                "Prometheus metrics.\n",
                            ],
                        }
                    ],
                },
                {
                    "name": "analyst",
                    "role": "Talks to users",
                    "model": "scripted/analyst",
                    "script": [
                        {
                            "delay": 1.2,
                            "outputChunks": [
                                '"We replaced three cron jobs with one mission."\n',
                                '"The retries with feedback just work."\n',
                            ],
                        }
                    ],
                },
                {
                    "name": "writer",
                    "role": "Writes the copy",
                    "model": "scripted/writer",
                    "script": [
                        {"delay": 0.6, "fail": "the model provider timed out (a scripted failure: watch the retry)"},
                        {
                            "delay": 0.8,
                            "outputChunks": [
                                "Missions 1.0 is out. ",
                                "It runs AI-agent workflows with retries, gates and checkpoints.\n",
                            ],
                        },
                        {
                            "delay": 0.8,
                            "outputChunks": [
                                "Missions 1.0 is out: run AI-agent workflows you can watch live, ",
                                "with retries that learn from feedback, quality gates and human checkpoints.\n",
                                '"We replaced three cron jobs with one mission."\n',
                                "Try it now: pip install missions && missions demo\n",
                            ],
                        },
                    ],
                },
                {
                    "name": "editor",
                    "role": "Reviews the copy",
                    "model": "scripted/editor",
                    "script": [{"delay": 0.6, "outputChunks": ["Facts checked, tone fits. ", "Approved.\n"]}],
                },
                {
                    "name": "publisher",
                    "role": "Publishes",
                    "model": "scripted/publisher",
                    "script": [{"delay": 0.6, "outputChunks": ["Posted to the blog: ", "/blog/missions-1-0\n"]}],
                },
            ],
        },
        "assessor": {
            "model": "scripted/judge",
            "script": [
                {"score": 3.4, "reason": "Accurate, but flat, and there is no call to action."},
                {"score": 4.7, "reason": "Clear and accurate; ends with a call to action."},
            ],
        },
        "qualityGates": [{"name": "draft quality", "afterTasks": [DRAFT], "blocksTasks": [REVIEW], "minScore": 4.0}],
        "checkpoints": [
            {
                "name": "publish approval",
                "afterTasks": [REVIEW],
                "blocksTasks": ["Publish"],
                "message": "The reviewed announcement is ready. Approve publishing it to the blog?",
            }
        ],
    }


def run_demo(
    client: Client,
    display: Display,
    *,
    approve_after: float = APPROVE_AFTER_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Create and run the demo mission, resolving its gate and checkpoint; the final status."""
    created = client.create_mission(demo_mission())
    mission_id = str(created["id"])
    run = client.execute(mission_id)
    display.note(
        f'demo: running mission "{created["name"]}" ({mission_id}) with {len(created["tasks"])} '
        "tasks on scripted agents"
    )

    def on_pause(data: dict[str, Any]) -> bool:
        reason = data.get("pauseReason")
        if reason == "quality_gate":
            display.note(
                "demo: the quality gate wants a draft scoring 4 or more; resuming with "
                "retryFailed=true, so the draft is written again with the judge's feedback"
            )
            return _resume(client, mission_id, retry_failed=True)
        if reason == "checkpoint":
            display.note(f"demo: checkpoint reached: {data.get('pauseMessage')}")
            display.note(f"demo: approving it in {approve_after:g} s (yourself: missions resume {mission_id})")
            sleep(approve_after)
            return _resume(client, mission_id, retry_failed=False)
        return False

    return watch(client, mission_id, str(run["id"]), display, on_pause=on_pause)


def _resume(client: Client, mission_id: str, *, retry_failed: bool) -> bool:
    try:
        client.resume(mission_id, retry_failed)
    except ApiError as exc:
        if exc.status != 409:  # 409: no longer paused, which is what we wanted
            raise
    return True


def private_stack_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="missions-demo-"))


def remove_stack_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
