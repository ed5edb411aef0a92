"""The CLI's client sends POST, PATCH and DELETE with an Idempotency-Key and sends them again when
the answer is lost or the server asks for a retry: against the real app over a loopback socket,
a request whose answer never arrives is run once."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests
from flask import Flask
from requests.adapters import HTTPAdapter
from werkzeug.serving import make_server

from api.cli.client import ApiError, Client
from tests.fixtures.examples import DEPLOY_PIPELINE


class LosesAnswers(HTTPAdapter):
    """Sends each request, then drops the answers of the first ``lose`` mutating ones (as a network
    that cuts the connection after the server did the work)."""

    def __init__(self, lose: int) -> None:
        super().__init__()
        self.lose = lose
        self.sent: list[tuple[str, str | None]] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        response = super().send(request, *args, **kwargs)
        self.sent.append((str(request.method), request.headers.get("Idempotency-Key")))
        if request.method != "GET" and self.lose > 0:
            self.lose -= 1
            raise requests.ConnectionError("Connection aborted: RemoteDisconnected")
        return response


@pytest.fixture
def served(app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def client_losing(served: str, api_key: str, lose: int) -> tuple[Client, LosesAnswers]:
    adapter = LosesAnswers(lose)
    session = requests.Session()
    session.mount("http://", adapter)
    return Client(served, api_key, session=session, reconnect_delay=0.01), adapter


def test_a_create_whose_answer_is_lost_is_sent_again_and_runs_once(
    served: str, api_key: str, db: psycopg.Connection
) -> None:
    client, adapter = client_losing(served, api_key, lose=2)
    created = client.create_mission(copy.deepcopy(DEPLOY_PIPELINE))
    assert created["name"] == DEPLOY_PIPELINE["name"]
    assert db.execute("SELECT count(*) AS n FROM missions").fetchone()["n"] == 1
    keys = [key for method, key in adapter.sent]
    assert len(keys) == 3 and len(set(keys)) == 1 and keys[0].startswith("missions-cli-")
    run = client.execute(created["id"])
    assert db.execute("SELECT count(*) AS n FROM runs").fetchone()["n"] == 1 and run["status"] == "active"


def test_a_request_whose_answer_is_always_lost_fails_after_the_retries(served: str, api_key: str) -> None:
    client, adapter = client_losing(served, api_key, lose=10)
    with pytest.raises(ApiError, match="cannot reach"):
        client.create_mission(copy.deepcopy(DEPLOY_PIPELINE))
    assert len(adapter.sent) == 4  # the first send and three more


def test_a_server_that_refuses_connections_fails_at_once() -> None:
    import time

    from tests.support.stack import free_port

    client = Client(f"http://127.0.0.1:{free_port()}", "sk_live_x", reconnect_delay=5)
    started = time.monotonic()
    with pytest.raises(ApiError, match="connection refused"):
        client.create_mission({"name": "x"})
    assert time.monotonic() - started < 2  # (no retry: nothing reached a server)


def test_a_get_carries_no_idempotency_key(served: str, api_key: str) -> None:
    client, adapter = client_losing(served, api_key, lose=0)
    client.list_missions()
    assert adapter.sent == [("GET", None)]


def test_a_rate_limited_request_is_sent_again_after_retry_after(
    settings: Any, api_key: str, db: psycopg.Connection
) -> None:
    from api.http.app import create_app
    from workers.wiring import Services

    limited = settings.replace(rate_limit=1, rate_limit_burst=1)
    services = Services(limited)
    server = make_server("127.0.0.1", 0, create_app(limited, services), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client, adapter = client_losing(f"http://127.0.0.1:{server.server_port}", api_key, lose=0)
        client.list_missions()  # the one request of this second
        created = client.create_mission(copy.deepcopy(DEPLOY_PIPELINE))  # 429 first, then sent again
        assert created["name"] == DEPLOY_PIPELINE["name"]
        assert len(adapter.sent) >= 3 and len({key for method, key in adapter.sent if method == "POST"}) == 1
        assert db.execute("SELECT count(*) AS n FROM missions").fetchone()["n"] == 1
    finally:
        server.shutdown()
        services.close()
