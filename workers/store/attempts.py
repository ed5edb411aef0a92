"""Attempt rows: the claim, the heartbeat, the records a step depends on (guards), and the tick's
repair queries.

A statement that finds one attempt by its key names the status the attempt must have as a
parameter (``was``), never as a literal: with ``status = 'queued'`` written out, a plan Postgres
caches while the table is small may read the partial index of all queued attempts instead of the
primary key, and keep doing so as the queue grows (tests/integration/test_query_plans.py). The
tick's scans do the opposite: they name their status as a literal, so that they read the partial
indexes of running and queued attempts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from orchestrator.engine import LIVE_ATTEMPT_STATUSES, AttemptStatus
from orchestrator.report import AttemptUsage
from workers.store.db import Connection
from workers.store.queries import query
from workers.support import tracing

CLAIM = query("claim_attempt")
STORE_PROMPT = query("store_attempt_prompt")
DROP_ASSESSMENT = query("drop_assessment")
REOPEN_FOR_ASSESSMENT = query("reopen_for_assessment")
RECORD_CANCELLED_USAGE = query("record_cancelled_usage")
BEAT = query("beat_attempts")
TO_ASSESS = query("attempt_to_assess")
LOST_RUNNING = query("lost_running_attempts")
STALE_ASSESSING = query("stale_assessing_attempts")
UNSENT = query("unsent_attempts")
POSTPONE_LOST = query("postpone_lost_attempt")
CANCEL = query("cancel_attempt")


@dataclass(frozen=True)
class Guard:
    """A change of one attempt row that a step depends on, written in the statement that locks the
    run row: the step goes on only when it matched the row (the attempt was still ``was``).
    ``name`` picks the statements (``workers/store/queries/runs.sql``: ``lock_run_<name>`` and
    ``save_step_if_current_<name>``); build one with ``record_result``, ``record_score`` or
    ``mark_lost``."""

    name: str
    params: Mapping[str, Any]


def record_result(
    run_id: str,
    task_id: str,
    attempt: int,
    *,
    now: datetime,
    status: AttemptStatus,
    output: str | None,
    error: str | None,
    tokens_in: int,
    tokens_out: int,
    cost: float,
    outcomes: Sequence[Mapping[str, Any]],
) -> Guard:
    """The agent's result of a running attempt (its status after the result: see
    ``orchestrator.engine.attempt_status_after_result``)."""
    return Guard(
        "recording_result",
        {
            "run_id": run_id,
            "task_id": task_id,
            "attempt": attempt,
            "now": now,
            "attempt_status": status.value,
            "output": output,
            "error": error,
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "cost": cost,
            "outcomes": Jsonb([dict(o) for o in outcomes]),
            "was": AttemptStatus.RUNNING.value,
        },
    )


def usage_after(guard: Guard, row: Mapping[str, Any]) -> AttemptUsage | None:
    """What the attempt adds to its task's report once ``guard`` has written it (the SQL of
    ``save_step_if_current_<name>`` in ``runs.sql``), from its ``row`` as read before; None for a
    guard whose writes this does not follow."""
    p = guard.params
    if guard.name == "recording_result":  # the agent's usage set, the attempt's end now
        used = (p["tokens_in"], p["tokens_out"], p["cost"])
        judged = (row["judge_tokens_in"], row["judge_tokens_out"], row["judge_cost_usd"])
        ended = row["assessed_at"] or p["now"]
    elif guard.name == "recording_score":  # the judge's usage added, the verdict now
        used = (row["tokens_in"], row["tokens_out"], row["cost_usd"])
        judged = (
            row["judge_tokens_in"] + p["judge_tokens_in"],
            row["judge_tokens_out"] + p["judge_tokens_out"],
            row["judge_cost_usd"] + p["judge_cost"],
        )
        ended = p["now"]
    else:
        return None
    return AttemptUsage(
        tokens_in=int(used[0]) + int(judged[0]),
        tokens_out=int(used[1]) + int(judged[1]),
        cost_usd=float(used[2]) + float(judged[2]),
        queued_at=row["created_at"],
        claimed_at=row["claimed_at"],
        ended_at=ended,
    )


def record_score(
    run_id: str,
    task_id: str,
    attempt: int,
    *,
    now: datetime,
    status: AttemptStatus,
    score: float | None,
    assessment: Mapping[str, Any],
    judge_model: str | None,
    judge_tokens_in: int,
    judge_tokens_out: int,
    judge_cost: float,
) -> Guard:
    """The judge's verdict on an assessing attempt."""
    return Guard(
        "recording_score",
        {
            "run_id": run_id,
            "task_id": task_id,
            "attempt": attempt,
            "now": now,
            "attempt_status": status.value,
            "score": score,
            "assessment": Jsonb(dict(assessment)),
            "judge_model": judge_model,
            "judge_tokens_in": judge_tokens_in,
            "judge_tokens_out": judge_tokens_out,
            "judge_cost": judge_cost,
            "was": AttemptStatus.ASSESSING.value,
        },
    )


def mark_lost(run_id: str, task_id: str, attempt: int, *, now: datetime) -> Guard:
    """A running attempt whose worker stopped heart-beating (a racing tick's mark matches nothing)."""
    return Guard(
        "marking_lost",
        {"run_id": run_id, "task_id": task_id, "attempt": attempt, "now": now, "was": AttemptStatus.RUNNING.value},
    )


def claim(
    conn: Connection, run_id: str, task_id: str, attempt: int, worker: str, now: datetime
) -> dict[str, Any] | None:
    """Claim a queued attempt for ``worker`` (one statement: a second delivery finds it claimed);
    its agent, model and prompt, or None when it was not queued."""
    row = conn.execute(
        CLAIM,
        {
            "run_id": run_id,
            "task_id": task_id,
            "attempt": attempt,
            "worker": worker,
            "now": now,
            "was": AttemptStatus.QUEUED.value,
        },
    ).fetchone()
    return dict(row) if row is not None else None


def store_prompt(conn: Connection, run_id: str, task_id: str, attempt: int, prompt: str) -> None:
    conn.execute(STORE_PROMPT, {"run_id": run_id, "task_id": task_id, "attempt": attempt, "prompt": prompt})


def record_cancelled_usage(
    conn: Connection,
    run_id: str,
    task_id: str,
    attempt: int,
    *,
    tokens_in: int,
    tokens_out: int,
    cost: float,
    outcomes: Sequence[Mapping[str, Any]],
) -> None:
    """What a cancelled attempt had already spent (turns that finished before the cancel) still counts."""
    conn.execute(
        RECORD_CANCELLED_USAGE,
        {
            "run_id": run_id,
            "task_id": task_id,
            "attempt": attempt,
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "cost": cost,
            "outcomes": Jsonb([dict(o) for o in outcomes]),
        },
    )


def to_assess(conn: Connection, run_id: str, task_id: str, attempt: int) -> dict[str, Any] | None:
    """An assessing attempt's output, agent and model, its run's status and how many of its task's
    attempts were assessed before; None when it is not assessing."""
    row = conn.execute(
        TO_ASSESS, {"run_id": run_id, "task_id": task_id, "attempt": attempt, "was": AttemptStatus.ASSESSING.value}
    ).fetchone()
    return dict(row) if row is not None else None


def reopen_for_assessment(conn: Connection, run_id: str, task_id: str, attempt: int, now: datetime) -> bool:
    """Make a judged attempt (``completed`` or ``failed`` with an output) ``assessing`` again, for an
    operator's reassessment (in the transaction that applies it); False when it is not such an attempt."""
    row = conn.execute(
        REOPEN_FOR_ASSESSMENT,
        {
            "run_id": run_id,
            "task_id": task_id,
            "attempt": attempt,
            "now": now,
            "assessing": AttemptStatus.ASSESSING.value,
            "was": [AttemptStatus.COMPLETED.value, AttemptStatus.FAILED.value],
        },
    ).fetchone()
    return row is not None


def drop_assessment(conn: Connection, run_id: str, task_id: str, attempt: int, now: datetime) -> None:
    """The run ended (abort, deadline, budget) while this attempt waited for its judge: do not judge it."""
    conn.execute(
        DROP_ASSESSMENT,
        {"run_id": run_id, "task_id": task_id, "attempt": attempt, "now": now, "was": AttemptStatus.ASSESSING.value},
    )


def beat(conn: Connection, watched: Sequence[Mapping[str, Any]]) -> set[tuple[str, str, int]]:
    """Heart-beat the ``watched`` attempts (``run_id, task_id, attempt, status``) still in the status
    their worker holds them in; the keys of those that were."""
    return {
        (r["run_id"], r["task_id"], int(r["attempt"]))
        for r in conn.execute(BEAT, {"watched": Jsonb([dict(w) for w in watched])})
    }


def lost_running(conn: Connection, cutoff: datetime, limit: int) -> list[dict[str, Any]]:
    """Running attempts whose heartbeat is older than ``cutoff``, oldest first (with the
    ``traceparent`` of their run while tracing is on, None otherwise)."""
    params = {"cutoff": cutoff, "limit": limit, "traced": tracing.enabled()}
    return [dict(r) for r in conn.execute(LOST_RUNNING, params)]


def take_stale_assessing(conn: Connection, cutoff: datetime, now: datetime, limit: int) -> list[dict[str, Any]]:
    """Assessing attempts whose judge went silent before ``cutoff``, touched so another tick skips
    them (with their run's ``traceparent`` while tracing is on)."""
    params = {"cutoff": cutoff, "now": now, "limit": limit, "traced": tracing.enabled()}
    return [dict(r) for r in conn.execute(STALE_ASSESSING, params)]


def take_unsent(
    conn: Connection, cutoff: datetime, now: datetime, limit: int, *, backoff_cap: timedelta = timedelta(0)
) -> list[dict[str, Any]]:
    """Queued attempts last sent before ``cutoff``, marked sent now (their messages go again).

    With a ``backoff_cap``, an attempt is taken only once its last send is also older than the time
    it had waited when it was last sent (at most ``backoff_cap``): the gaps between the re-sends of
    one attempt double up to the cap. An attempt created at ``t`` is then re-sent at about
    ``t + r``, ``t + 2r``, ``t + 4r``... (``r = now - cutoff``), so one that waits in a long but
    healthy queue gets a few duplicates, and one whose message was lost waits at most about as long
    again as it had already waited (and never more than the cap) before its message goes again.
    While tracing is on, each row has its run's ``traceparent``."""
    params = {"cutoff": cutoff, "now": now, "limit": limit, "backoff_cap": backoff_cap, "traced": tracing.enabled()}
    return [dict(r) for r in conn.execute(UNSENT, params)]


def postpone_lost(conn: Connection, run_id: str, task_id: str, attempt: int, now: datetime) -> None:
    """Set a running attempt's heartbeat to ``now``: the reaper, whose step for it failed, looks at
    it again only once it is older than the worker-lost window (the others go first meanwhile)."""
    conn.execute(
        POSTPONE_LOST,
        {"run_id": run_id, "task_id": task_id, "attempt": attempt, "now": now, "was": AttemptStatus.RUNNING.value},
    )


def cancel(conn: Connection, run_id: str, cancels: Sequence[tuple[str, int, str]], now: datetime) -> None:
    """Cancel the ``(task_id, attempt, reason)`` attempts a step stopped, if still queued or running."""
    if not cancels:
        return
    live = sorted(s.value for s in LIVE_ATTEMPT_STATUSES)
    params = [
        {"run_id": run_id, "task_id": task_id, "attempt": attempt, "reason": reason, "now": now, "live": live}
        for task_id, attempt, reason in cancels
    ]
    with conn.cursor() as cur:
        if len(params) == 1:
            cur.execute(CANCEL, params[0])
        else:
            cur.executemany(CANCEL, params)
