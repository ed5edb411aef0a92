"""``GET /metrics``: Prometheus text computed from Postgres at scrape time, plus the coordinator
counters that processes keep in Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.scenarios import agent, mission
from workers.support import metrics as worker_metrics
from workers.wiring import Services


def scrape(client: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(answer.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@pytest.fixture
def recorder(services: Services) -> Iterator[None]:
    worker_metrics._recorder.reset()
    yield
    worker_metrics._recorder.reset()
    worker_metrics.configure(None)


def test_metrics_need_no_key_and_name_every_family(client: FlaskClient) -> None:
    samples = scrape(client)
    names = {name for name, _ in samples}
    for expected in (
        "missions_missions",
        "missions_tasks",
        "missions_retries_total",
        "missions_task_duration_seconds_count",
        "missions_task_queue_wait_seconds_bucket",
        "missions_assessment_score_sum",
        "missions_coordinator_step_seconds_count",
        "missions_sse_clients",
        "missions_tick_lag_seconds",
        "missions_metrics_source_up",
    ):
        assert expected in names, expected
    assert samples[("missions_metrics_source_up", (("source", "postgres"),))] == 1
    assert samples[("missions_metrics_source_up", (("source", "redis"),))] == 1


def test_missions_tasks_and_attempts_move_when_a_mission_starts(client: FlaskClient, auth: dict[str, str]) -> None:
    before = scrape(client)
    doc = mission(
        "counted",
        [{"title": "A", "assignTo": "a"}, {"title": "B", "assignTo": "a", "dependsOn": ["A"]}],
        [agent("a", {"output": "ok"})],
    )
    created = client.post("/v1/missions", json=doc, headers=auth).get_json()
    assert client.post(f"/v1/missions/{created['id']}/execute", headers=auth).status_code == 202
    after = scrape(client)
    assert (
        after[("missions_missions", (("status", "active"),))]
        == before[("missions_missions", (("status", "active"),))] + 1
    )
    assert after[("missions_tasks", (("status", "queued"),))] == before[("missions_tasks", (("status", "queued"),))] + 1
    assert (
        after[("missions_tasks", (("status", "pending"),))] == before[("missions_tasks", (("status", "pending"),))] + 1
    )
    assert after.get(("missions_attempts_total", (("status", "queued"),)), 0) == 1


def test_coordinator_steps_and_events_counted_by_a_process_reach_the_scrape(
    client: FlaskClient, services: Services, recorder: None
) -> None:
    services.redis.delete(worker_metrics.STEP_KEY, worker_metrics.EVENTS_KEY)
    worker_metrics.configure(services.redis)
    worker_metrics.observe_step(0.003, ["task:status", "task:status", "mission:status"])
    worker_metrics.observe_step(0.2, ["task:output"])
    worker_metrics.flush()
    samples = scrape(client)
    assert samples[("missions_coordinator_step_seconds_count", ())] == 2
    assert samples[("missions_coordinator_step_seconds_bucket", (("le", "0.005"),))] == 1
    assert samples[("missions_coordinator_step_seconds_bucket", (("le", "0.25"),))] == 2
    assert samples[("missions_coordinator_step_seconds_sum", ())] == pytest.approx(0.203)
    assert samples[("missions_events_published_total", (("type", "task:status"),))] == 2
    assert samples[("missions_events_published_total", (("type", "task:output"),))] == 1


def test_counting_a_step_does_no_io_even_when_redis_is_unreachable(recorder: None) -> None:
    import time

    import redis

    worker_metrics.configure(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=None))
    started = time.perf_counter()
    for _ in range(1000):
        worker_metrics.observe_step(0.01, ["mission:status"])
    assert time.perf_counter() - started < 0.5
    worker_metrics.flush()  # the flusher's write fails: logged and dropped, never raised


def test_events_counted_apart_from_a_step_reach_the_scrape(
    client: FlaskClient, services: Services, recorder: None
) -> None:
    services.redis.delete(worker_metrics.STEP_KEY, worker_metrics.EVENTS_KEY)
    worker_metrics.configure(services.redis)
    worker_metrics.count_events(["mission:status", "mission:done"])
    worker_metrics.flush()
    samples = scrape(client)
    assert samples[("missions_events_published_total", (("type", "mission:done"),))] == 1
    assert samples[("missions_coordinator_step_seconds_count", ())] == 0
