from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.fake_llm import FakeLLM
from tests.support.stack import Stack


def stack_env(database_url: str, redis_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MISSIONS_")}
    env.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "MISSIONS_DATA_DIR": str(data_dir),
            "MISSIONS_TICK_SECONDS": "0.3",
            "MISSIONS_HEARTBEAT_SECONDS": "0.5",
            "MISSIONS_WORKER_LOST_SECONDS": "3",
            "MISSIONS_REQUEUE_SECONDS": "2",
            "MISSIONS_LOG_LEVEL": "info",
            # (Tests poll as fast as they like; tests/e2e/test_clients.py sets a real limit.)
            "MISSIONS_RATE_LIMIT": "1000000",
            "MISSIONS_RATE_LIMIT_BURST": "1000000",
        }
    )
    return env


@contextmanager
def running_stack(
    database_url: str, redis_url: str, tmp_path: Path, extra_env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """API, one worker and beat as real processes on this test's database and Redis."""
    import psycopg
    from psycopg.rows import dict_row

    from workers.store.projects import create_key

    logs = tmp_path / "logs"
    logs.mkdir()
    env = stack_env(database_url, redis_url, tmp_path / "data")
    env.update(extra_env or {})
    stack = Stack(env=env, logs=logs)
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        stack.key = create_key(conn, "e2e")
    try:
        stack.start_worker()
        stack.start_beat()
        stack.start_api()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def stack(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(database_url, redis_url, tmp_path) as running:
        yield running


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    """The loopback fake of the OpenAI and Anthropic APIs (``tests/support/fake_llm.py``)."""
    with FakeLLM() as fake:
        yield fake
