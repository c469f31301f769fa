"""One real stack for the fault tests: Prefect server on PostgreSQL, a process worker, the API.

The registry's circuit breaker is set to open after FAILURE_THRESHOLD failures and to stay
open RESET_TIMEOUT seconds, so an outage and a recovery fit in a test. Retry delays are the
suite's short ones (tests/conftest.py), so a task's six attempts take two to three seconds:
well inside RESET_TIMEOUT, which keeps an opened circuit open for the rest of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import TaskRun

from deployments.stack import Stack
from storage.database import reset_engine, session_scope
from storage.migrate import upgrade
from storage.repositories import audit, outbox, phases, services, versions
from tests.faults.helpers import eventually
from tests.support import auth
from tests.support.registry import FakeRegistry
from tests.support.services import require_postgres, temporary_database
from tests.support.stack import prefect_stack

FAILURE_THRESHOLD = 2
RESET_TIMEOUT = 8
SETTLED = {"active", "failed"}


@pytest.fixture(scope="package")
def faults_registry() -> Iterator[FakeRegistry]:
    with FakeRegistry() as fake:
        yield fake


@pytest.fixture
def registry(faults_registry: FakeRegistry) -> Iterator[FakeRegistry]:
    """The stack's registry: healthy and empty, with no calls recorded, at the start of every test."""
    faults_registry.heal()
    faults_registry.entries.clear()
    faults_registry.calls.clear()
    faults_registry.failed.clear()
    yield faults_registry
    faults_registry.heal()


@pytest.fixture(scope="package")
def faults_db() -> Iterator[str]:
    """The marketplace database of the stack (PostgreSQL), migrated."""
    require_postgres()
    with temporary_database(prefix="mkt_faults") as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="package")
def faults_stack(
    tmp_path_factory: pytest.TempPathFactory, faults_db: str, faults_registry: FakeRegistry
) -> Iterator[Stack]:
    env = {
        "MARKETPLACE_DATABASE__URL": faults_db,
        "MARKETPLACE_REGISTRY__URL": faults_registry.url,
        "MARKETPLACE_REGISTRY__FAILURE_THRESHOLD": str(FAILURE_THRESHOLD),
        "MARKETPLACE_REGISTRY__RESET_TIMEOUT_SECONDS": str(RESET_TIMEOUT),
        "MARKETPLACE_ENDPOINT_TESTS__ALLOW_INSECURE_ENDPOINTS": "true",
        "MARKETPLACE_ENDPOINT_TESTS__LATENCY_SAMPLES": "3",
        # The process worker, a Python process per run: the option that isolates runs (the e2e
        # stack runs the default warm worker). A fresh process per run also gives every run a
        # fresh registry circuit breaker, which these tests count on.
        "MARKETPLACE_WORKER__MODE": "process",
    }
    with prefect_stack(tmp_path_factory.mktemp("faults"), with_worker=True, with_api=True, env=env) as stack:
        yield stack


@pytest.fixture
def api(faults_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=faults_stack.config.api_url, timeout=15) as client:
        yield client


@pytest.fixture
def app_db(faults_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This process reads (and the in-process API writes) the stack's database."""
    monkeypatch.setenv("MARKETPLACE_DATABASE__URL", faults_db)
    reset_engine()
    yield faults_db
    reset_engine()


def as_provider(spec: dict[str, Any]) -> dict[str, str]:
    """The bearer header of the spec's own provider."""
    return auth.provider(spec["provider"]["id"])


def wait_settled(api: httpx.Client, service_id: str, headers: dict[str, str], timeout: float = 90) -> dict[str, Any]:
    """The status report once the publication ended (`active` or `failed`) and its run finished."""

    def probe() -> dict[str, Any] | None:
        report: dict[str, Any] = api.get(f"/api/v1/services/{service_id}/status", headers=headers).json()
        run_state = (report.get("flowRun") or {}).get("state")
        done = report.get("versionStatus") in SETTLED and run_state in ("COMPLETED", "FAILED")
        return report if done else None

    return eventually(probe, timeout, f"service {service_id} to settle", interval=0.5)


def task_runs(stack: Stack, flow_run_id: str, name: str) -> list[TaskRun]:
    """The task runs called `name` (e.g. "registry-sync") of a flow run, from the Prefect API, once
    all are recorded in a final state: Prefect's services record task runs from their events in
    batches (deployments/stack.py EVENT_BATCHES), a second or so after the flow run has ended."""

    def recorded() -> list[TaskRun] | None:
        with SyncPrefectClient(stack.config.prefect_api_url) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)])))
        named = [run for run in runs if run.name.startswith(f"{name}-")]
        return named if named and all(run.state is not None and run.state.is_final() for run in named) else None

    return eventually(recorded, timeout=15, what=f"the {name} task runs of {flow_run_id} in a final state")


def snapshot(service_id: str) -> dict[str, Any]:
    """What the database holds about a service (needs `app_db`)."""
    with session_scope() as session:
        service = services.get(session, service_id)
        version = versions.latest(session, service_id)
        return {
            "status": service.status,
            "failure_phase": service.failure_phase,
            "registry_id": version.registry_id,
            "phases": [(r.phase, r.check_name, r.outcome) for r in phases.for_service(session, service_id)],
            "audit": [(a.action, a.to_status, a.reason, a.details) for a in audit.for_service(session, service_id)],
            "events": [e.event_type for e in outbox.for_aggregate(session, service_id)],
        }
