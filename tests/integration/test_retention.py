"""Retention against real Postgres: what the MISSIONS_RETAIN_*_DAYS settings delete, what they
never touch (active and paused runs, a mission's newest run, a run another transaction holds, a
run's mission:done, attempts' usage), batches that stay within their size, the tick's part, and
``missions db stats``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from config import Settings
from tests.integration.test_cli import missions
from workers.store import retention
from workers.store.retention import Policy, Pruned
from workers.wiring import Services

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
OLD = NOW - timedelta(days=40)
RECENT = NOW - timedelta(days=2)
MISSION = "msn_keep"


@pytest.fixture
def mission(db: psycopg.Connection) -> str:
    db.execute("INSERT INTO projects (id, name) VALUES ('prj_keep', 'keep')")
    db.execute(
        "INSERT INTO missions (id, project_id, name, status, document) "
        "VALUES (%s, 'prj_keep', 'kept', 'completed', '{}')",
        (MISSION,),
    )
    return MISSION


def add_run(
    db: psycopg.Connection,
    number: int,
    status: str = "completed",
    finished_at: datetime | None = OLD,
    events: int = 5,
    attempts: int = 2,
    mission_id: str = MISSION,
) -> str:
    run_id = f"run_{mission_id}_{number}"
    db.execute(
        "INSERT INTO runs (id, mission_id, number, status, spec, state, created_at, finished_at) "
        "VALUES (%s, %s, %s, %s, '{}', '{}', %s, %s)",
        (run_id, mission_id, number, status, OLD, finished_at),
    )
    db.execute(
        "UPDATE missions SET latest_run_id = %s, execution_count = %s WHERE id = %s", (run_id, number, mission_id)
    )
    for n in range(attempts):
        db.execute(
            "INSERT INTO attempts (run_id, task_id, attempt, status, prompt, output, tokens_in, cost_usd) "
            "VALUES (%s, 'task_a', %s, 'completed', 'the prompt', 'the output', 10, 0.5)",
            (run_id, n + 1),
        )
    for n in range(events):
        db.execute(
            "INSERT INTO events (run_id, mission_id, type, data, created_at) VALUES (%s, %s, 'task:output', %s, %s)",
            (run_id, mission_id, Jsonb({"n": n}), OLD),
        )
    if finished_at is not None:
        db.execute(
            "INSERT INTO events (run_id, mission_id, type, data) VALUES (%s, %s, 'mission:done', '{}')",
            (run_id, mission_id),
        )
    return run_id


def event_types(db: psycopg.Connection, run_id: str) -> list[str]:
    return [r["type"] for r in db.execute("SELECT type FROM events WHERE run_id = %s ORDER BY id", (run_id,))]


def outputs(db: psycopg.Connection, run_id: str) -> list[tuple[Any, ...]]:
    rows = db.execute("SELECT prompt, output, tokens_in, cost_usd FROM attempts WHERE run_id = %s", (run_id,))
    return [(r["prompt"], r["output"], r["tokens_in"], r["cost_usd"]) for r in rows]


def days(n: float | None) -> timedelta | None:
    return None if n is None else timedelta(days=n)


def policy(events: float | None = None, outputs: float | None = None, runs: float | None = None, **kw: Any) -> Policy:
    return Policy(days(events), days(outputs), days(runs), **kw)


def test_by_default_nothing_is_deleted(services: Services, db: psycopg.Connection, mission: str) -> None:
    run = add_run(db, 1)
    add_run(db, 2)

    pruned = retention.prune(services.db, Policy.from_settings(Settings()), NOW)

    assert pruned == Pruned() and not Policy.from_settings(Settings()).enabled
    assert event_types(db, run) == ["task:output"] * 5 + ["mission:done"]
    assert outputs(db, run) == [("the prompt", "the output", 10, 0.5)] * 2


def test_old_finished_runs_lose_their_events_but_mission_done_and_recent_runs_keep_theirs(
    services: Services, db: psycopg.Connection, mission: str
) -> None:
    old = add_run(db, 1)
    recent = add_run(db, 2, finished_at=RECENT)

    pruned = retention.prune(services.db, policy(events=30), NOW)

    assert pruned.events == 5
    assert event_types(db, old) == ["mission:done"]  # a stream of the run still ends
    assert event_types(db, recent) == ["task:output"] * 5 + ["mission:done"]
    assert db.execute("SELECT events_pruned FROM runs WHERE id = %s", (old,)).fetchone() == {"events_pruned": True}
    assert retention.prune(services.db, policy(events=30), NOW).events == 0  # done once


@pytest.mark.parametrize("status", ["active", "paused"])
def test_an_active_or_paused_run_is_never_touched(
    services: Services, db: psycopg.Connection, mission: str, status: str
) -> None:
    add_run(db, 1)
    live = add_run(db, 2, status=status, finished_at=None)

    retention.prune(services.db, policy(events=1, outputs=1, runs=1), NOW)

    assert event_types(db, live) == ["task:output"] * 5
    assert outputs(db, live) == [("the prompt", "the output", 10, 0.5)] * 2


def test_old_prompts_and_outputs_are_cleared_and_usage_stays(
    services: Services, db: psycopg.Connection, mission: str
) -> None:
    old = add_run(db, 1)
    recent = add_run(db, 2, finished_at=RECENT)

    pruned = retention.prune(services.db, policy(outputs=30), NOW)

    assert pruned.outputs == 2
    assert outputs(db, old) == [(None, None, 10, 0.5)] * 2
    assert outputs(db, recent) == [("the prompt", "the output", 10, 0.5)] * 2
    assert event_types(db, old) == ["task:output"] * 5 + ["mission:done"]


def test_old_runs_are_deleted_with_their_attempts_and_events_but_each_mission_keeps_its_newest(
    services: Services, db: psycopg.Connection, mission: str
) -> None:
    runs = [add_run(db, number) for number in (1, 2, 3)]  # all finished 40 days ago
    db.execute(
        "INSERT INTO schedule_fires (mission_id, fire_at, status, run_id) VALUES (%s, %s, 'started', %s)",
        (mission, OLD, runs[0]),
    )

    pruned = retention.prune(services.db, policy(runs=30), NOW)

    assert pruned.runs == 2 and pruned.events == 12
    remaining = [r["id"] for r in db.execute("SELECT id FROM runs ORDER BY number")]
    assert remaining == [runs[2]]
    assert db.execute("SELECT count(*) AS n FROM attempts WHERE run_id <> %s", (runs[2],)).fetchone() == {"n": 0}
    assert db.execute("SELECT count(*) AS n FROM events WHERE run_id <> %s", (runs[2],)).fetchone() == {"n": 0}
    fire = db.execute("SELECT status, run_id FROM schedule_fires").fetchone()
    assert fire == {"status": "started", "run_id": None}  # the fire stays, unlinked


def test_a_run_another_transaction_holds_is_left_for_a_later_tick(
    services: Services, db: psycopg.Connection, database_url: str, mission: str
) -> None:
    held = add_run(db, 1)
    free = add_run(db, 2)
    with psycopg.connect(database_url) as other:
        other.execute("SELECT 1 FROM runs WHERE id = %s FOR UPDATE", (held,))

        retention.prune(services.db, policy(events=30), NOW)

        assert event_types(db, held) == ["task:output"] * 5 + ["mission:done"]
        assert event_types(db, free) == ["mission:done"]
    retention.prune(services.db, policy(events=30), NOW)
    assert event_types(db, held) == ["mission:done"]


def test_each_batch_deletes_at_most_its_size_and_a_run_is_marked_only_when_done(
    services: Services, db: psycopg.Connection, mission: str
) -> None:
    run = add_run(db, 1, events=25)
    small = policy(events=30, batch=10)
    pruned = Pruned()
    sizes = []
    marked = []
    for _ in range(3):
        with services.db.transaction() as conn:
            before = pruned.events
            assert retention._prune_batch("events", conn, NOW - timedelta(days=30), small, pruned)
            sizes.append(pruned.events - before)
        marked.append(db.execute("SELECT events_pruned FROM runs WHERE id = %s", (run,)).fetchone()["events_pruned"])

    assert sizes == [10, 10, 5] and marked == [False, False, True]
    assert event_types(db, run) == ["mission:done"]


def test_prune_stops_when_its_time_is_spent(services: Services, db: psycopg.Connection, mission: str) -> None:
    for number in range(1, 6):
        add_run(db, number, events=30)
    pruned = retention.prune(services.db, policy(events=30, batch=10, seconds=0.01), NOW)
    left = db.execute("SELECT count(*) AS n FROM events WHERE type <> 'mission:done'").fetchone()["n"]
    assert pruned.events + left == 150
    assert pruned.batches * 10 >= pruned.events  # (batches of at most 10 rows)


def test_the_tick_applies_retention(settings: Settings, db: psycopg.Connection, mission: str) -> None:
    old = add_run(db, 1, finished_at=datetime.now(UTC) - timedelta(days=3))
    add_run(db, 2, finished_at=datetime.now(UTC) - timedelta(days=3))
    services = Services(settings.replace(retain_events_days=1.0, retain_outputs_days=2.0, retain_runs_days=2.5))
    try:
        report = services.tick()
    finally:
        services.close()
    assert report.failed == 0 and report.pruned > 0
    assert db.execute("SELECT count(*) AS n FROM runs WHERE id = %s", (old,)).fetchone() == {"n": 0}


def test_db_stats_shows_table_sizes_and_what_retention_would_delete(
    database_url: str, db: psycopg.Connection, mission: str
) -> None:
    add_run(db, 1)
    add_run(db, 2, events=3)
    db.commit()
    db.execute("ANALYZE")

    off = missions("db", "stats", DATABASE_URL=database_url)
    on = missions(
        "db",
        "stats",
        DATABASE_URL=database_url,
        MISSIONS_RETAIN_EVENTS_DAYS="30",
        MISSIONS_RETAIN_RUNS_DAYS="35",
    )

    assert off.returncode == 0 and on.returncode == 0, off.stderr + on.stderr
    lines = {line.split()[0]: line.split()[1:] for line in off.stdout.splitlines() if line.strip()}
    assert {"runs", "events", "attempts", "missions"} <= lines.keys()
    assert lines["events"][0] == "10"  # rows (estimate, just analysed)
    assert "retention: off" in off.stdout
    assert "runs finished over 35 days ago: 1 runs, with 2 attempts and 6 events" in on.stdout
    assert "events of runs finished over 30 days ago: 8 events of 2 runs" in on.stdout
    assert "outputs: kept for ever" in on.stdout


def add_deliveries(db: psycopg.Connection, run_id: str, finished: list[datetime | None]) -> list[str]:
    """Webhook deliveries of the run's first event, one per entry: finished then (delivered; None:
    still pending), each with one recorded try."""
    db.execute(
        "INSERT INTO webhooks (id, project_id, url, events, secret) VALUES ('wh_keep', 'prj_keep', "
        "'https://hooks.example.com/x', '{mission:done}', 'whsec_x') ON CONFLICT DO NOTHING"
    )
    ids = []
    for n, at in enumerate(finished):
        delivery_id = f"msg_{run_id}_{n}"
        db.execute(
            "INSERT INTO webhook_deliveries (id, webhook_id, event_id, run_id, mission_id, type, data, status,"
            " attempts, created_at, finished_at) VALUES (%s, 'wh_keep', %s, %s, %s, 'mission:done', '{}', %s, 1,"
            " %s, %s)",
            (delivery_id, 1_000_000 + n, run_id, MISSION, "pending" if at is None else "delivered", OLD, at),
        )
        db.execute(
            "INSERT INTO webhook_attempts (delivery_id, attempt, started_at, duration_ms, status_code)"
            " VALUES (%s, 1, %s, 12, 200)",
            (delivery_id, OLD),
        )
        ids.append(delivery_id)
    return ids


def delivery_ids(db: psycopg.Connection) -> list[str]:
    return [r["id"] for r in db.execute("SELECT id FROM webhook_deliveries ORDER BY id")]


def test_finished_webhook_deliveries_are_kept_as_long_as_events_and_pending_ones_always(
    services: Services, db: psycopg.Connection, mission: str
) -> None:
    run = add_run(db, 1, finished_at=RECENT)
    old, recent, pending = add_deliveries(db, run, [OLD, RECENT, None])

    pruned = retention.prune(services.db, policy(events=30), NOW)

    assert pruned.deliveries == 1
    assert delivery_ids(db) == sorted([recent, pending])
    assert db.execute("SELECT count(*) AS n FROM webhook_attempts WHERE delivery_id = %s", (old,)).fetchone() == {
        "n": 0
    }  # its tries went with it
    assert retention.prune(services.db, policy(outputs=30), NOW).deliveries == 0  # events kept: so are they


def test_with_only_runs_limited_deliveries_are_kept_as_long_as_runs_in_bounded_batches(
    services: Services, db: psycopg.Connection, mission: str
) -> None:
    run = add_run(db, 1, finished_at=RECENT)
    add_deliveries(db, run, [OLD] * 25)

    pruned = retention.prune(services.db, policy(runs=30, batch=10, seconds=5.0), NOW)

    assert pruned.deliveries == 25 and delivery_ids(db) == []
    assert pruned.batches == 1 + 3  # the runs' (none due), then 10 + 10 + 5


def test_db_stats_counts_the_deliveries_retention_would_delete(
    database_url: str, db: psycopg.Connection, mission: str
) -> None:
    run = add_run(db, 1, finished_at=RECENT)
    add_deliveries(db, run, [OLD, OLD, RECENT, None])
    db.commit()

    on = missions("db", "stats", DATABASE_URL=database_url, MISSIONS_RETAIN_EVENTS_DAYS="30")

    assert on.returncode == 0, on.stderr
    assert "webhook deliveries finished over 30 days ago: 2" in on.stdout
