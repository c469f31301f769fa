"""The whole stack as processes: Prefect server on PostgreSQL, a process worker, the API over HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from deployments.stack import Stack
from storage.migrate import upgrade
from tests.support.services import require_postgres, temporary_database
from tests.support.stack import prefect_stack

TERMINAL = {"active", "failed", "pending_approval"}


@pytest.fixture(scope="session")
def e2e_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_postgres()
    with temporary_database(prefix="mkt_e2e") as app_db:
        upgrade(app_db)
        env = {
            "MARKETPLACE_DATABASE__URL": app_db,
            "MARKETPLACE_ENDPOINT_TESTS__ALLOW_INSECURE_ENDPOINTS": "true",
            "MARKETPLACE_ENDPOINT_TESTS__LATENCY_SAMPLES": "3",
        }
        with prefect_stack(tmp_path_factory.mktemp("e2e"), with_worker=True, with_api=True, env=env) as stack:
            yield stack


@pytest.fixture
def api(e2e_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=e2e_stack.config.api_url, timeout=10) as client:
        yield client


@pytest.fixture
def wait_until_settled(api: httpx.Client) -> Callable[[str, float], dict[str, Any]]:
    def wait(service_id: str, timeout: float = 90) -> dict[str, Any]:
        """Poll the status endpoint until the pipeline stops at a terminal or waiting state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = api.get(f"/api/v1/services/{service_id}/status").json()
            if status["status"] in TERMINAL and status["flowRun"]["state"] in ("COMPLETED", "FAILED"):
                return status
            time.sleep(0.5)
        raise AssertionError(f"service {service_id} did not settle in {timeout} s: {status}")

    return wait
