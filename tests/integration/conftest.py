from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.http.app import create_app
from config import Settings
from workers.wiring import Services


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    svc = Services(settings)
    yield svc
    svc.close()


@pytest.fixture
def app(settings: Settings, services: Services) -> Flask:
    return create_app(settings, services)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _key(services: Services, project: str) -> str:
    from workers.store.projects import create_key

    with services.transaction() as conn:
        return create_key(conn, project)


@pytest.fixture
def api_key(services: Services) -> str:
    return _key(services, "acme")


@pytest.fixture
def other_key(services: Services) -> str:
    return _key(services, "globex")


@pytest.fixture
def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}
