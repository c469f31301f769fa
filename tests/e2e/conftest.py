"""The whole stack as processes: Prefect server on PostgreSQL, a process worker, the API over HTTP.

One stack per session, configured for short waits: approvals expire after APPROVAL_TIMEOUT
seconds and retirement follows deprecation after GRACE seconds. An external registry
(a local fake) records what the pipeline registers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.states import Pending

from api.auth import Role, issue_token
from core.settings import AuthSettings
from deployments.stack import Stack
from storage.migrate import upgrade
from tests.support import auth
from tests.support.registry import FakeRegistry
from tests.support.services import require_postgres, temporary_database
from tests.support.stack import prefect_stack

APPROVAL_TIMEOUT = 25
GRACE = 10
HEARTBEAT = 30  # Prefect's shortest heartbeat interval
CRASH_AFTER = 35  # seconds without a heartbeat before a running run is marked Crashed
SETTLED = {"active", "failed", "pending_approval", "deprecated", "retired"}
T = TypeVar("T")


@pytest.fixture(scope="package")
def registry() -> Iterator[FakeRegistry]:
    with FakeRegistry() as fake:
        yield fake


@pytest.fixture(scope="package")
def e2e_stack(tmp_path_factory: pytest.TempPathFactory, registry: FakeRegistry) -> Iterator[Stack]:
    require_postgres()
    with temporary_database(prefix="mkt_e2e") as app_db:
        upgrade(app_db)
        env = {
            "MARKETPLACE_DATABASE__URL": app_db,
            "MARKETPLACE_REGISTRY__URL": registry.url,
            "MARKETPLACE_ENDPOINT_TESTS__ALLOW_INSECURE_ENDPOINTS": "true",
            "MARKETPLACE_ENDPOINT_TESTS__LATENCY_SAMPLES": "3",
            "MARKETPLACE_LIFECYCLE__APPROVAL_TIMEOUT_SECONDS": str(APPROVAL_TIMEOUT),
            "MARKETPLACE_CONSUMPTION__ACCESS_APPROVAL_TIMEOUT_SECONDS": str(APPROVAL_TIMEOUT),
            "MARKETPLACE_LIFECYCLE__DEPRECATION_GRACE_SECONDS": str(GRACE),
            "PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_LOOP_SECONDS": "1",
            "MARKETPLACE_RATE_LIMIT__PUBLISH_LIMIT": "100000",
            "MARKETPLACE_WORKER__HEARTBEAT_SECONDS": str(HEARTBEAT),
            "MARKETPLACE_WORKER__CRASH_AFTER_SECONDS": str(CRASH_AFTER),
            "MARKETPLACE_API__REALTIME_PRIORITY": "true",  # the opt-in, checked by test_publish_e2e
        }
        workdir = tmp_path_factory.mktemp("e2e")
        env["MARKETPLACE_GATEWAY__JOURNAL_DIR"] = str(workdir / "gateway-journal")
        with prefect_stack(workdir, with_worker=True, with_api=True, with_gateway=True, env=env) as stack:
            CLAIMED_NEVER_STARTED.append(leave_a_claimed_run(stack))
            yield stack
            CLAIMED_NEVER_STARTED.clear()


# A run left as a worker leaves one it claimed just before its host was lost: Pending, never
# started, no heartbeat ever. Made when the stack starts so that crash detection's window has
# long passed when test_recovery_e2e looks at it (waiting there would add the window to the suite).
CLAIMED_NEVER_STARTED: list[UUID] = []
CLAIMED_ONLY = "refresh-service-signals/refresh-service-signals"  # any deployment: the run never starts


def leave_a_claimed_run(stack: Stack) -> UUID:
    with SyncPrefectClient(stack.config.prefect_api_url) as prefect:
        deployment = prefect.read_deployment_by_name(CLAIMED_ONLY)
        return prefect.create_flow_run_from_deployment(deployment.id, state=Pending()).id


@pytest.fixture
def api(e2e_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=e2e_stack.config.api_url, timeout=15, headers=auth.provider()) as client:
        yield client


@pytest.fixture
def governance() -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token('grace-governance', Role.GOVERNANCE, AuthSettings())}"}


def eventually(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll until `probe` returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last}")


@pytest.fixture
def wait_until_settled(api: httpx.Client) -> Callable[..., dict[str, Any]]:
    def wait(service_id: str, timeout: float = 120, status: str | None = None) -> dict[str, Any]:
        """Poll the status endpoint until the pipeline stops (or reaches `status`)."""

        def probe() -> dict[str, Any] | None:
            report: dict[str, Any] = api.get(f"/api/v1/services/{service_id}/status").json()
            run_state = (report.get("flowRun") or {}).get("state")
            if status is not None:  # and the run's state read since (it is null until then)
                reached = status in (report["status"], report["versionStatus"]) and run_state is not None
                return report if reached else None
            settled = report["versionStatus"] in SETTLED and run_state in ("COMPLETED", "FAILED", "PAUSED")
            return report if settled else None

        return eventually(probe, timeout, f"service {service_id} to settle")

    return wait
