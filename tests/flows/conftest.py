"""Flow tests run the publish flow in-process against a real Prefect server and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.stack import Stack
from storage.database import reset_engine


@pytest.fixture
def flow_env(database_url: str, prefect_server: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Settings for running flows here: loopback providers allowed, a short latency probe."""
    monkeypatch.setenv("MARKETPLACE_ENDPOINT_TESTS__ALLOW_INSECURE_ENDPOINTS", "true")
    monkeypatch.setenv("MARKETPLACE_ENDPOINT_TESTS__LATENCY_SAMPLES", "3")
    reset_engine()
    with temporary_settings({PREFECT_API_URL: prefect_server.config.prefect_api_url}):
        yield monkeypatch
    reset_engine()
