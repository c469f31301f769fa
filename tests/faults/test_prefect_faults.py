"""The Prefect API unreachable, or its answers lost, when a publication is submitted.

Documented behaviour (durable intake: api/publishing.py submit_service, api/run_starter.py): the
service and the run it is owed are stored in one transaction and the request is answered 202 at
once, whatever Prefect is doing. The run starter creates the run afterwards, retrying with backoff
and with the same idempotency key every time: a submission made while Prefect is down starts when
it answers again, and a creation whose answer was lost is not made twice.

The API runs in-process against the fault stack's database; its way to Prefect goes through a
TCP proxy that the test cuts and restores, so only this test's path is affected.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from sqlalchemy import select

from api.app import create_app
from deployments.stack import Stack
from storage.database import reset_engine, session_scope
from storage.models import FlowRunRequest, Service
from tests.faults.conftest import as_provider
from tests.faults.helpers import TcpProxy, eventually
from tests.support.provider import FakeProvider, good_spec
from tests.support.registry import FakeRegistry

pytestmark = pytest.mark.e2e
START_TIMEOUT = 5  # seconds creating a run may wait for an answer (production: 20)
ANSWERED_WITHIN = 2.0  # seconds a submission may take while Prefect is gone (it never waits for Prefect)


@pytest.fixture
def proxy(faults_stack: Stack) -> Iterator[TcpProxy]:
    """The API's path to Prefect; not listening until the test starts it."""
    path = TcpProxy(faults_stack.config.prefect_port)
    yield path
    path.stop()


@pytest.fixture
def only_starter(faults_stack: Stack) -> Iterator[None]:
    """The stack's own API process paused: its run starter shares this database (as every API process
    does) and reaches Prefect directly, so it would start the runs these tests keep from Prefect."""
    pid = faults_stack.pid_of("api")
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture
def client(
    app_db: str,
    faults_stack: Stack,
    registry: FakeRegistry,
    proxy: TcpProxy,
    only_starter: None,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[TestClient]:
    monkeypatch.setenv("MARKETPLACE_PREFECT__API_URL", f"http://127.0.0.1:{proxy.port}/api")
    monkeypatch.setenv("MARKETPLACE_PREFECT__START_TIMEOUT_SECONDS", str(START_TIMEOUT))
    monkeypatch.setenv("MARKETPLACE_PREFECT__REQUEST_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("MARKETPLACE_PREFECT__START_MAX_RETRY_SECONDS", "1")
    monkeypatch.setenv("MARKETPLACE_REGISTRY__URL", registry.url)
    monkeypatch.setenv("MARKETPLACE_ENDPOINT_TESTS__ALLOW_INSECURE_ENDPOINTS", "true")  # the local provider
    reset_engine()
    with TestClient(create_app()) as test_client:
        yield test_client
    reset_engine()


def service_named(name: str) -> list[str]:
    with session_scope() as session:
        return list(session.scalars(select(Service.id).where(Service.name == name)))


def post_timed(client: TestClient, spec: dict[str, Any]) -> tuple[httpx.Response, float]:
    t0 = time.monotonic()
    response = client.post("/api/v1/services", json=spec, headers=as_provider(spec))
    return response, time.monotonic() - t0


def assert_accepted_at_once(response: httpx.Response, elapsed: float, spec: dict[str, Any]) -> str:
    """202 without waiting for Prefect, the service stored; returns its id."""
    assert response.status_code == 202, response.text
    assert elapsed < ANSWERED_WITHIN, f"the request took {elapsed:.1f} s"
    service_id = str(response.json()["serviceId"])
    assert service_named(spec["name"]) == [service_id]
    return service_id


def queued_run(client: TestClient, service_id: str, spec: dict[str, Any], attempts: int = 1) -> dict[str, Any]:
    """The status report's run while its start is owed, once `attempts` attempts failed."""

    def probe() -> dict[str, Any] | None:
        report = client.get(f"/api/v1/services/{service_id}/status", headers=as_provider(spec)).json()
        run: dict[str, Any] = report["flowRun"]
        return run if run["state"] == "QUEUED" and run["startAttempts"] >= attempts else None

    return eventually(probe, 30, f"{attempts} failed start(s) of {service_id}'s run", interval=0.2)


def failed_start_recorded(service_id: str) -> bool:
    """The starter recorded a failed attempt at the service's publish run. Read from the record, not the
    status report: the run Prefect did create may already report itself running, which the report shows
    instead of the queued start."""
    with session_scope() as session:
        query = select(FlowRunRequest.attempts).where(
            FlowRunRequest.service_id == service_id, FlowRunRequest.kind == "publish"
        )
        return any(attempts >= 1 for attempts in session.scalars(query))


def runs_of(stack: Stack, service_id: str) -> list[Any]:
    with SyncPrefectClient(stack.config.prefect_api_url) as prefect:
        return list(
            prefect.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"service:{service_id}"]))
            )
        )


def wait_active(client: TestClient, service_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        report: dict[str, Any] = client.get(f"/api/v1/services/{service_id}/status", headers=as_provider(spec)).json()
        return report if report["status"] in ("active", "failed") else None

    report = eventually(probe, 90, f"service {service_id} to settle", interval=0.5)
    assert report["status"] == "active", report.get("failure")
    return report


def test_submissions_while_prefect_is_unreachable_are_accepted_and_start_when_it_answers(
    client: TestClient, proxy: TcpProxy, faults_stack: Stack
) -> None:
    with FakeProvider() as provider:
        spec = good_spec(provider.url, name="faults-prefect-never-seen")
        service_id = assert_accepted_at_once(*post_timed(client, spec), spec)
        run = queued_run(client, service_id, spec, attempts=2)
        assert run["id"] is None
        assert "unavailable" in run["lastStartError"]
        ready = client.get("/ready")
        assert ready.status_code == 200, "submissions are still taken"
        assert ready.json()["checks"] == {"database": "ok", "prefect": "unavailable"}
        duplicate = client.post("/api/v1/services", json=spec, headers=as_provider(spec))
        assert duplicate.status_code == 409, "a duplicate is refused at once, Prefect or not"

        proxy.start()
        wait_active(client, service_id, spec)
    assert len(runs_of(faults_stack, service_id)) == 1


def test_prefect_lost_after_the_api_connected_delays_runs_not_answers(
    client: TestClient, proxy: TcpProxy, faults_stack: Stack
) -> None:
    """The Prefect client retries a lost connection five times with backoff (about a minute) once it
    has connected: the provider's request must not wait for that, nor for anything of Prefect's."""
    proxy.start()
    with FakeProvider() as provider:
        first = good_spec(provider.url, name="faults-prefect-first")
        accepted, _ = post_timed(client, first)
        assert accepted.status_code == 202, accepted.text
        wait_active(client, accepted.json()["serviceId"], first)

        proxy.stop()
        spec = good_spec(provider.url, name="faults-prefect-lost")
        service_id = assert_accepted_at_once(*post_timed(client, spec), spec)
        status = client.get(f"/api/v1/services/{accepted.json()['serviceId']}/status", headers=as_provider(first))
        assert status.status_code == 200, "the status report does without the run's state"
        queued_run(client, service_id, spec)

        proxy.start()
        wait_active(client, service_id, spec)
        assert client.get("/ready").json()["checks"]["prefect"] == "ok"
    assert len(runs_of(faults_stack, service_id)) == 1


def test_a_lost_answer_from_prefect_is_retried_into_the_same_run(
    client: TestClient, proxy: TcpProxy, faults_stack: Stack
) -> None:
    """Prefect creates the run but its answer never arrives: the retry, with the same idempotency key,
    gets that run back instead of creating a second one."""
    proxy.start()
    with FakeProvider() as provider:
        warm = good_spec(provider.url, name="faults-prefect-warm")
        accepted = post_timed(client, warm)[0]
        assert accepted.status_code == 202  # the deployment id is known from now on
        wait_active(client, accepted.json()["serviceId"], warm)
        proxy.swallow_responses = True  # requests reach Prefect, answers never come back
        spec = good_spec(provider.url, name="faults-prefect-no-answer")
        service_id = assert_accepted_at_once(*post_timed(client, spec), spec)
        eventually(lambda: runs_of(faults_stack, service_id), 30, "Prefect to create the run")
        eventually(lambda: failed_start_recorded(service_id), 30, "the start to fail (its answer was lost)", 0.2)
        proxy.swallow_responses = False
        report = wait_active(client, service_id, spec)
    runs = runs_of(faults_stack, service_id)
    assert len(runs) == 1, [r.id for r in runs]
    assert report["flowRun"]["id"] == str(runs[0].id)
