"""API tests: the app in-process against a real Prefect server (no worker, so runs stay scheduled)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from deployments.stack import Stack
from storage.database import reset_engine
from tests.support import auth


@pytest.fixture
def anonymous(database_url: str, prefect_server: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app, called without a bearer token (the public catalogue's view)."""
    config = prefect_server.config
    monkeypatch.setenv("MARKETPLACE_PREFECT__API_URL", config.prefect_api_url)
    monkeypatch.setenv("MARKETPLACE_PREFECT__UI_URL", f"http://{config.host}:{config.prefect_port}")
    monkeypatch.setenv("MARKETPLACE_LIMITS__MAX_BODY_BYTES", str(256 * 1024))
    monkeypatch.setenv("MARKETPLACE_RATE_LIMIT__PUBLISH_LIMIT", "100000")  # the limit's own tests set theirs
    reset_engine()
    with TestClient(create_app()) as test_client:
        yield test_client
    reset_engine()


@pytest.fixture
def client(anonymous: TestClient) -> TestClient:
    """The app, called as provider "acme" (the provider of the test specs) unless a test sends other headers."""
    anonymous.headers.update(auth.provider())
    return anonymous
