"""A server dependency that is down is a 503 with ``Retry-After`` in the error shape, answered within
a few seconds, never a 500 or a hang: Postgres refusing connections, Postgres terminating them, a
Postgres "restart" (a proxy in front of the real server, stopped and started again), and Redis down
(which no request needs in order to do its job: sends after commit are repaired by the tick, and
streams poll the log)."""

from __future__ import annotations

import copy
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

import api.http.app as app_module
from api.http.app import create_app
from api.http.openapi import build_spec
from config import Settings
from tests.fixtures.examples import DEPLOY_PIPELINE
from workers.store.db import DatabaseUnavailable, is_transient
from workers.support.errors import Unavailable
from workers.wiring import Services

HELLO = {
    "name": "hello",
    "tasks": [{"title": "Greet", "description": "Write a greeting.", "assignTo": "writer"}],
    "team": {"agents": [{"name": "writer", "model": "scripted/demo", "script": [{"output": "hi"}]}]},
}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def on_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


def assert_unavailable(answer: Any) -> dict[str, Any]:
    assert answer.status_code == 503, answer.get_data(as_text=True)[:500]
    assert answer.mimetype == "application/json"
    error = answer.get_json()
    assert set(error) == {"error", "code", "details"}
    assert error["code"] == "unavailable"
    assert error["details"] == {"service": "postgres"}  # (what failed, hosts and ports, is in the log only)
    assert answer.headers["Retry-After"] == str(Unavailable.retry_after)
    return error  # type: ignore[no-any-return]


def timed(client: FlaskClient, method: str, url: str, **kwargs: Any) -> tuple[Any, float]:
    started = time.monotonic()
    answer = client.open(url, method=method, **kwargs)
    return answer, time.monotonic() - started


@pytest.fixture
def refused(settings: Settings) -> Iterator[Services]:
    """Services whose Postgres refuses every connection (nothing listens on its port)."""
    services = Services(settings.replace(database_url=on_port(settings.database_url or "", closed_port())))
    yield services
    services.close()


KEY = {"Authorization": "Bearer sk_live_whatever"}


def test_while_postgres_refuses_connections_a_request_is_a_503_within_the_pool_wait(
    settings: Settings, refused: Services
) -> None:
    client = create_app(settings, refused).test_client()
    for method, url, body in (
        ("GET", "/v1/missions", None),
        ("POST", "/v1/missions", copy.deepcopy(DEPLOY_PIPELINE)),
    ):
        answer, took = timed(client, method, url, json=body, headers=KEY)
        assert_unavailable(answer)
        assert took < app_module.POOL_WAIT_SECONDS + 1.5, took
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.headers["Retry-After"] == str(Unavailable.retry_after)


def test_every_operation_that_documents_a_503_answers_it_while_postgres_is_down(
    settings: Settings, refused: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "POOL_WAIT_SECONDS", 0.2)
    app = create_app(settings, refused)
    client = app.test_client()
    spec = build_spec(app, strict=True)
    documented = 0
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if path in ("/metrics", "/readyz"):
                continue  # (each waits seconds of its own for Postgres; /readyz is checked above)
            url = path.replace("{missionId}", "msn_x").replace("{taskId}", "task_x").replace("{runId}", "run_x")
            body = {} if "requestBody" in operation else None
            answer = client.open(url, method=method.upper(), json=body, headers=KEY)
            if operation["responses"].get("503") == {"$ref": "#/components/responses/E503"}:
                documented += 1
                assert_unavailable(answer)
            else:  # (the operations that need no Postgres: health, this document)
                assert answer.status_code == 200, (method, path, answer.status_code)
    assert documented >= 15


@pytest.fixture
def app_pids(db: psycopg.Connection) -> Any:
    def terminate() -> int:
        rows = db.execute(
            "SELECT pg_terminate_backend(pid) AS gone FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        return len(rows)

    return terminate


def test_connections_terminated_under_the_pool_are_a_503_then_replaced(
    client: FlaskClient, auth: dict[str, str], app_pids: Any
) -> None:
    assert client.post("/v1/missions", json=copy.deepcopy(DEPLOY_PIPELINE), headers=auth).status_code == 201
    assert app_pids() >= 1  # every pooled connection of the app, as a Postgres restart would

    answer, took = timed(client, "GET", "/v1/missions", headers=auth)
    assert_unavailable(answer)
    assert took < 1.0
    # The pool's other idle connections are checked in the background: requests work again at once.
    deadline = time.monotonic() + 5
    answers = []
    while time.monotonic() < deadline:
        answer = client.get("/v1/missions", headers=auth)
        answers.append(answer.status_code)
        if answer.status_code == 200:
            break
        assert_unavailable(answer)
        time.sleep(0.1)
    assert answers[-1] == 200, answers
    assert [m["name"] for m in client.get("/v1/missions", headers=auth).get_json()] == ["deploy-pipeline"]


class Proxy:
    """A TCP proxy in front of the real Postgres: ``stop`` drops every connection and refuses new ones
    (a server going down), ``start`` listens again on the same port (the server is back)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = closed_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, []
        for sock in [listener, *sockets]:
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def proxy(settings: Settings) -> Iterator[Proxy]:
    parts = urlsplit(settings.database_url or "")
    running = Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    running.start()
    yield running
    running.stop()


def test_while_postgres_restarts_requests_are_503_then_served_again(
    settings: Settings, auth: dict[str, str], proxy: Proxy
) -> None:
    services = Services(settings.replace(database_url=on_port(settings.database_url or "", proxy.port)))
    try:
        client = create_app(settings, services).test_client()
        assert client.post("/v1/missions", json=copy.deepcopy(HELLO), headers=auth).status_code == 201

        proxy.stop()  # down: every connection dropped, new ones refused
        for _ in range(2):  # the pooled connection is found broken, then none can be made
            answer, took = timed(client, "GET", "/v1/missions", headers=auth)
            assert_unavailable(answer)
            assert took < app_module.POOL_WAIT_SECONDS + 1.5, took

        proxy.start()  # back
        started = time.monotonic()
        while True:
            answer, took = timed(client, "GET", "/v1/missions", headers=auth)
            assert took < app_module.POOL_WAIT_SECONDS + 1.5, took
            if answer.status_code == 200:
                break
            assert_unavailable(answer)
            assert time.monotonic() - started < 20, "still unavailable 20 s after Postgres came back"
            time.sleep(0.2)
        assert [m["name"] for m in answer.get_json()] == ["hello"]
    finally:
        services.close()


def test_a_request_that_needs_no_redis_to_do_its_job_is_served_while_redis_is_down(
    settings: Settings, auth: dict[str, str]
) -> None:
    services = Services(settings.replace(redis_url=f"redis://127.0.0.1:{closed_port()}/6"))
    try:
        client = create_app(settings, services).test_client()
        mission = client.post("/v1/missions", json=copy.deepcopy(HELLO), headers=auth).get_json()
        # The run is committed; its attempt messages could not be sent (logged): the tick re-sends them.
        answer, took = timed(client, "POST", f"/v1/missions/{mission['id']}/execute", headers=auth)
        assert answer.status_code == 202, answer.get_json()
        assert took < 5
        # Streams poll the event log while the hub cannot hear Redis.
        stream = client.get(f"/v1/missions/{mission['id']}/events", headers=auth, buffered=False)
        assert stream.status_code == 200 and stream.mimetype == "text/event-stream"
        stream.close()
        # Cancel flags could not be set (logged): the attempts, never claimed, are cancelled in Postgres.
        answer = client.post(f"/v1/missions/{mission['id']}/abort", headers=auth)
        assert answer.status_code == 200 and answer.get_json()["status"] == "cancelled"
        assert client.get(f"/v1/missions/{mission['id']}", headers=auth).status_code == 200
        assert client.get("/readyz").status_code == 503
    finally:
        services.close()


def test_statement_errors_pass_through_and_a_lost_database_stays_a_transient_psycopg_error(
    services: Services, db: psycopg.Connection
) -> None:
    with pytest.raises(psycopg.errors.DivisionByZero), services.db.transaction() as conn:
        conn.execute("SELECT 1/0")
    # A lock that cannot be had in time is an OperationalError of the statement, not a lost server.
    db.execute("CREATE TABLE locked (id int)")
    with db.transaction():
        db.execute("LOCK TABLE locked")
        with pytest.raises(psycopg.errors.LockNotAvailable), services.db.transaction() as conn:
            conn.execute("SET LOCAL lock_timeout = '50ms'")
            conn.execute("SELECT * FROM locked")

    lost = DatabaseUnavailable(psycopg.errors.AdminShutdown("terminating connection due to administrator command"))
    assert isinstance(lost, Unavailable) and isinstance(lost, psycopg.OperationalError)
    assert lost.status == 503 and lost.sqlstate == "57P01" and is_transient(lost)


def test_a_worker_keeps_the_pools_own_wait(app: Flask) -> None:
    """Only API requests wait a few seconds: outside a request the pool's 30 s apply (a worker
    waits for Postgres to come back rather than dropping a result)."""
    from workers.store.db import _POOL_WAIT

    assert _POOL_WAIT.get() is None
    with app.test_request_context():
        assert _POOL_WAIT.get() is None  # (set around the WSGI call, not per app context)
    seen = []
    app.before_request(lambda: seen.append(_POOL_WAIT.get()))
    app.test_client().get("/healthz")
    assert seen == [app_module.POOL_WAIT_SECONDS]
    assert _POOL_WAIT.get() is None
