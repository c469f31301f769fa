"""The Prefect API unreachable when a publication is submitted.

Documented behaviour (api/publishing.py submit_service): the flow run is created inside the
transaction that stores the service, before its commit. When Prefect cannot be reached the
request fails with 503 `upstream_unavailable` within the client timeout and nothing is stored:
no service, no version, no audit record, no outbox event. The provider retries; once Prefect
answers, the same request is stored and its run started. If Prefect created the run but its
answer was lost, the request still fails with nothing stored, and that run fails on its own
(its first task finds no version).

The API runs in-process against the fault stack's database; its way to Prefect goes through a
TCP proxy that the test cuts and restores, so only this test's path is affected.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime
from sqlalchemy import func, select

from api.app import create_app
from deployments.stack import Stack
from storage.database import reset_engine, session_scope
from storage.models import AuditLog, OutboxEvent, Service, ServiceVersion
from tests.faults.conftest import as_provider
from tests.faults.helpers import TcpProxy, eventually
from tests.support.provider import FakeProvider, good_spec
from tests.support.registry import FakeRegistry

pytestmark = pytest.mark.e2e
START_TIMEOUT = 5  # seconds creating a run may wait for an answer (production: 20)
BOUND = START_TIMEOUT + 5  # seconds a request may take with Prefect gone


@pytest.fixture
def proxy(faults_stack: Stack) -> Iterator[TcpProxy]:
    """The API's path to Prefect; not listening until the test starts it."""
    path = TcpProxy(faults_stack.config.prefect_port)
    yield path
    path.stop()


@pytest.fixture
def client(
    app_db: str, faults_stack: Stack, registry: FakeRegistry, proxy: TcpProxy, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setenv("MARKETPLACE_PREFECT__API_URL", f"http://127.0.0.1:{proxy.port}/api")
    monkeypatch.setenv("MARKETPLACE_PREFECT__START_TIMEOUT_SECONDS", str(START_TIMEOUT))
    monkeypatch.setenv("MARKETPLACE_REGISTRY__URL", registry.url)
    reset_engine()
    with TestClient(create_app()) as test_client:
        yield test_client
    reset_engine()


def stored_rows() -> dict[str, int]:
    with session_scope() as session:
        return {
            model.__name__: int(session.scalar(select(func.count()).select_from(model)) or 0)
            for model in (Service, ServiceVersion, AuditLog, OutboxEvent)
        }


def service_named(name: str) -> list[str]:
    with session_scope() as session:
        return list(session.scalars(select(Service.id).where(Service.name == name)))


def post_timed(client: TestClient, spec: dict[str, Any]) -> tuple[httpx.Response, float]:
    t0 = time.monotonic()
    response = client.post("/api/v1/services", json=spec, headers=as_provider(spec))
    return response, time.monotonic() - t0


def assert_refused_and_nothing_stored(response: httpx.Response, elapsed: float, before: dict[str, int]) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "upstream_unavailable"
    assert "orchestrator" in response.json()["error"]["message"]
    assert elapsed < BOUND, f"the request took {elapsed:.1f} s"
    assert stored_rows() == before, "no service, version, audit record or event"


def wait_active(client: TestClient, service_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        report: dict[str, Any] = client.get(f"/api/v1/services/{service_id}/status", headers=as_provider(spec)).json()
        return report if report["status"] in ("active", "failed") else None

    report = eventually(probe, 90, f"service {service_id} to settle", interval=0.5)
    assert report["status"] == "active", report.get("failure")
    return report


def test_prefect_unreachable_from_the_start_refuses_then_the_same_request_succeeds(
    client: TestClient, proxy: TcpProxy
) -> None:
    with FakeProvider() as provider:
        spec = good_spec(provider.url, name="faults-prefect-never-seen")
        before = stored_rows()
        response, elapsed = post_timed(client, spec)
        assert_refused_and_nothing_stored(response, elapsed, before)
        assert service_named(spec["name"]) == []
        mine = client.get("/api/v1/services", headers=as_provider(spec)).json()
        assert spec["name"] not in [s["name"] for s in mine["items"]]

        proxy.start()
        response, _ = post_timed(client, spec)
        assert response.status_code == 202, response.text
        assert service_named(spec["name"]) == [response.json()["serviceId"]]
        wait_active(client, response.json()["serviceId"], spec)


def test_prefect_lost_after_the_api_connected_fails_fast_and_recovers(client: TestClient, proxy: TcpProxy) -> None:
    """The Prefect client retries a lost connection five times with backoff (about a minute) once
    it has connected: the API must not hold the provider's request that long."""
    proxy.start()
    with FakeProvider() as provider:
        first = good_spec(provider.url, name="faults-prefect-first")
        accepted, _ = post_timed(client, first)
        assert accepted.status_code == 202, accepted.text
        wait_active(client, accepted.json()["serviceId"], first)  # its run writes nothing more while we count

        proxy.stop()
        spec = good_spec(provider.url, name="faults-prefect-lost")
        before = stored_rows()
        response, elapsed = post_timed(client, spec)
        assert_refused_and_nothing_stored(response, elapsed, before)
        t0 = time.monotonic()
        status = client.get(f"/api/v1/services/{accepted.json()['serviceId']}/status", headers=as_provider(first))
        assert status.status_code == 200, "the status report does without the run's state"
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"database": "ok", "prefect": "unavailable"}
        assert time.monotonic() - t0 < BOUND

        proxy.start()
        response, _ = post_timed(client, spec)
        assert response.status_code == 202, response.text
        assert client.get("/ready").status_code == 200
        wait_active(client, response.json()["serviceId"], spec)


def test_a_lost_answer_from_prefect_leaves_no_service_and_the_orphan_run_fails(
    client: TestClient, proxy: TcpProxy, faults_stack: Stack
) -> None:
    proxy.start()
    with FakeProvider() as provider:
        warm = good_spec(provider.url, name="faults-prefect-warm")
        accepted = post_timed(client, warm)[0]
        assert accepted.status_code == 202  # the deployment id is known from now on
        wait_active(client, accepted.json()["serviceId"], warm)  # its run writes nothing more while we count
        since = datetime.now(UTC)
        proxy.swallow_responses = True  # requests reach Prefect, answers never come back
        spec = good_spec(provider.url, name="faults-prefect-no-answer")
        before = stored_rows()
        response, elapsed = post_timed(client, spec)
        assert_refused_and_nothing_stored(response, elapsed, before)

    def orphan_runs() -> list[Any]:
        started = FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since))
        with SyncPrefectClient(faults_stack.config.prefect_api_url) as prefect:
            runs = prefect.read_flow_runs(flow_run_filter=started)
        with session_scope() as session:
            known = set(session.scalars(select(Service.id)))
        return [r for r in runs if r.name and r.parameters.get("service_id") not in known]

    (orphan,) = eventually(
        lambda: [r for r in orphan_runs() if r.state and r.state.is_final()], 60, "the orphan run to end"
    )
    assert orphan.state is not None and orphan.state.is_failed()
    assert "not (yet) in the database" in (orphan.state.message or "")
