"""``GET /metrics``: Prometheus text computed from Postgres at scrape time, plus the coordinator
counters that processes keep in Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from config import Settings
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


def test_missions_tasks_and_attempts_move_when_a_mission_starts(
    client: FlaskClient, auth: dict[str, str], recorder: None
) -> None:
    before = scrape(client)
    doc = mission(
        "counted",
        [{"title": "A", "assignTo": "a"}, {"title": "B", "assignTo": "a", "dependsOn": ["A"]}],
        [agent("a", {"output": "ok"})],
    )
    created = client.post("/v1/missions", json=doc, headers=auth).get_json()
    assert client.post(f"/v1/missions/{created['id']}/execute", headers=auth).status_code == 202
    worker_metrics.flush()  # (the API process's flusher does it within a second)
    after = scrape(client)
    assert (
        after[("missions_missions", (("status", "active"),))]
        == before[("missions_missions", (("status", "active"),))] + 1
    )
    assert after[("missions_tasks", (("status", "queued"),))] == before[("missions_tasks", (("status", "queued"),))] + 1
    assert (
        after[("missions_tasks", (("status", "pending"),))] == before[("missions_tasks", (("status", "pending"),))] + 1
    )
    assert after[("missions_attempts_total", ())] == before[("missions_attempts_total", ())] + 1
    assert after[("missions_retries_total", ())] == before[("missions_retries_total", ())]


def test_durations_waits_and_scores_observed_by_workers_reach_the_scrape_as_histograms(
    client: FlaskClient, services: Services, recorder: None
) -> None:
    services.redis.delete(*(worker_metrics.HISTOGRAM_KEY + name for name in worker_metrics.HISTOGRAMS))
    worker_metrics.configure(services.redis)
    worker_metrics.observe("task_duration", 0.3)
    worker_metrics.observe("task_duration", 42.0)
    worker_metrics.observe("queue_wait", 0.02)
    worker_metrics.observe("assessment_score", 4.5)
    worker_metrics.observe("assessment_score", 2.0)
    worker_metrics.count_attempts(3, 1)
    worker_metrics.flush()
    samples = scrape(client)
    assert samples[("missions_task_duration_seconds_count", ())] == 2
    assert samples[("missions_task_duration_seconds_bucket", (("le", "0.5"),))] == 1
    assert samples[("missions_task_duration_seconds_bucket", (("le", "60"),))] == 2
    assert samples[("missions_task_duration_seconds_sum", ())] == pytest.approx(42.3)
    assert samples[("missions_task_queue_wait_seconds_bucket", (("le", "0.05"),))] == 1
    assert samples[("missions_assessment_score_bucket", (("le", "2"),))] == 1
    assert samples[("missions_assessment_score_bucket", (("le", "+Inf"),))] == 2
    assert samples[("missions_attempts_total", ())] >= 3 and samples[("missions_retries_total", ())] >= 1


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


def test_queue_depth_and_the_oldest_queued_age_follow_the_queued_attempts(
    client: FlaskClient, auth: dict[str, str], services: Services
) -> None:
    before = scrape(client)
    assert before[("missions_queue_depth", (("queue", "missions"),))] == 0
    assert before[("missions_queue_oldest_age_seconds", (("queue", "missions"),))] == 0
    services.redis.delete("missions", "missions.control")
    doc = mission(
        "waiting",
        [{"title": "A", "assignTo": "a"}, {"title": "B", "assignTo": "a"}],
        [agent("a", {"output": "ok"})],
    )
    created = client.post("/v1/missions", json=doc, headers=auth).get_json()
    assert client.post(f"/v1/missions/{created['id']}/execute", headers=auth).status_code == 202
    with services.transaction() as conn:  # as if they had waited a while for a worker (none runs here)
        conn.execute("UPDATE attempts SET created_at = now() - interval '42 seconds' WHERE status = 'queued'")
    after = scrape(client)
    assert after[("missions_queue_depth", (("queue", "missions"),))] == 2
    assert 42 <= after[("missions_queue_oldest_age_seconds", (("queue", "missions"),))] < 60
    # one message carries both (attempts of one run started together: MISSIONS_BATCH_ATTEMPTS)
    assert after[("missions_broker_queue_length", (("queue", "missions"),))] == 1
    assert after[("missions_broker_queue_length", (("queue", "missions.control"),))] == 0


def test_tokens_cost_and_ticks_counted_by_workers_reach_the_scrape(
    client: FlaskClient, services: Services, recorder: None
) -> None:
    services.redis.delete(worker_metrics.USAGE_KEY, worker_metrics.TICKS_KEY)
    worker_metrics.configure(services.redis)
    worker_metrics.count_usage("openai/gpt-4o", 1200, 300, 0.006)
    worker_metrics.count_usage("openai/gpt-4o", 800, 200, 0.004)
    worker_metrics.count_usage("anthropic/claude-sonnet-4-5", 10, 5, 0.0001)
    worker_metrics.count_usage("openai/never-answered", 0, 0, 0.0)  # nothing used: no series
    worker_metrics.count_tick(True)
    worker_metrics.count_tick(True)
    worker_metrics.count_tick(False)
    worker_metrics.flush()
    samples = scrape(client)
    gpt = (("model", "gpt-4o"), ("provider", "openai"))
    assert samples[("missions_tokens_total", (("direction", "input"), *gpt))] == 2000
    assert samples[("missions_tokens_total", (("direction", "output"), *gpt))] == 500
    assert samples[("missions_cost_usd_total", gpt)] == pytest.approx(0.01)
    claude = (("model", "claude-sonnet-4-5"), ("provider", "anthropic"))
    assert samples[("missions_tokens_total", (("direction", "input"), *claude))] == 10
    assert not any(labels and ("model", "never-answered") in labels for _, labels in samples)
    assert samples[("missions_ticks_total", (("outcome", "ok"),))] == 2
    assert samples[("missions_ticks_total", (("outcome", "failed"),))] == 1


def test_metrics_need_the_operators_token_when_one_is_set(settings: Settings, services: Services) -> None:
    from api.http.app import create_app

    client = create_app(settings.replace(metrics_token="s3cret-token"), services).test_client()
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused.get_json()["code"] == "unauthorized"
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Basic s3cret-token"}).status_code == 401
    answer = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert answer.status_code == 200 and b"missions_queue_depth" in answer.data
