"""The status report's caches: our records under the service's change token, the Prefect run state for a second.

Against a real Prefect server (no worker: runs stay scheduled until a test moves them) and the
marketplace database on SQLite and PostgreSQL, with the in-process cache and with Redis.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from prefect.client.orchestration import SyncPrefectClient
from prefect.states import Cancelled, Crashed

from api import intake
from api.app import create_app
from api.orchestrator import Orchestrator
from api.schemas import ServiceStatusOut
from core.domain import ServiceStatus
from core.settings import PrefectSettings
from deployments.stack import Stack
from storage.cache import RedisBackend
from storage.database import reset_engine, session_scope
from storage.repositories import services, versions
from storage.repositories.services import Actor
from tests.support import auth
from tests.support.runs import with_started_run
from tests.support.services import REDIS_URL, require_tcp
from tests.support.specs import make_spec
from tests.support.sql import database_reads

SERVICES = "/api/v1/services"
DEADLINE_SECONDS = 10.0


@pytest.fixture(params=["local", "redis"])
def cache_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    # A changed record is waited for however long it takes to load (the tests below read right after a change).
    monkeypatch.setenv("MARKETPLACE_API__STATUS_WAIT_SECONDS", "30")
    if request.param == "redis":
        require_tcp("127.0.0.1", 6379, "Redis")
        RedisBackend(REDIS_URL)._redis.flushdb()
        monkeypatch.setenv("MARKETPLACE_CACHE__REDIS_URL", REDIS_URL)
    return str(request.param)


@pytest.fixture
def api(cache_mode: str, client: TestClient) -> TestClient:
    """The app as provider "acme", with the cache of `cache_mode` (configured before the app starts)."""
    return client


def publish(client: TestClient) -> dict[str, Any]:
    """Submit, and wait for the run the submission owes to be created (the record moves no more then)."""
    response = client.post(SERVICES, json=make_spec())
    assert response.status_code == 202, response.text
    return with_started_run(client, response.json())


def status(client: TestClient, service_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = client.get(f"{SERVICES}/{service_id}/status", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def eventually_state(client: TestClient, service_id: str, state: str) -> float:
    """Seconds until the report shows the run in `state`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < DEADLINE_SECONDS:
        if status(client, service_id)["flowRun"]["state"] == state:
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"the run never showed {state} within {DEADLINE_SECONDS} s")


RECORD_PHASE = """
from datetime import UTC, datetime
from core.domain import Outcome, Phase, PhaseOutcome
from storage.database import session_scope
from storage.repositories import phases
outcome = PhaseOutcome(phase=Phase.METADATA_VALIDATION, outcome=Outcome.PASSED, evidence={{"by": "another process"}})
with session_scope() as session:
    phases.record(session, {service_id!r}, {flow_run_id!r}, outcome, datetime.now(UTC))
"""


def test_a_phase_recorded_by_a_flow_is_on_the_next_status_read(api: TestClient, cache_mode: str) -> None:
    body = publish(api)
    service_id, flow_run_id = body["serviceId"], body["flowRunId"]
    first = status(api, service_id)
    assert first["phases"] == []
    assert status(api, service_id) == first  # served from the cache
    # What a flow's task does, in another process (the worker): only a new validation_results row.
    script = RECORD_PHASE.format(service_id=service_id, flow_run_id=flow_run_id)
    subprocess.run([sys.executable, "-c", script], check=True, env=dict(os.environ), timeout=120)
    report = status(api, service_id)
    assert [(p["phase"], p["outcome"], p["evidence"]) for p in report["phases"]] == [
        ("metadata_validation", "passed", {"by": "another process"})
    ]
    ServiceStatusOut.model_validate(report)
    assert list(report) == [field.alias for field in ServiceStatusOut.model_fields.values()]


@pytest.mark.parametrize("cache_mode", ["redis"], indirect=True)  # in-process: no invalidation feed to go by
def test_a_slow_load_of_a_changed_record_is_not_waited_for(api: TestClient) -> None:
    """With Redis, a read answers with the record it served last rather than wait for a changed one
    (here: no waiting at all); the load goes on, and a later read has the change."""
    body = publish(api)
    service_id, flow_run_id = body["serviceId"], body["flowRunId"]
    first = status(api, service_id)
    api.app.state.status_view.wait_seconds = 0  # the app's status view (api/status/view.py)
    script = RECORD_PHASE.format(service_id=service_id, flow_run_id=flow_run_id)
    subprocess.run([sys.executable, "-c", script], check=True, env=dict(os.environ), timeout=120)
    answers = [status(api, service_id)["phases"] for _ in range(200)]
    assert answers[0] == first["phases"] == [], "the record served last, while the changed one loads"
    assert answers[-1] != [], "then the change"


def test_a_cached_report_is_still_only_for_the_owner_and_staff(api: TestClient) -> None:
    service_id = publish(api)["serviceId"]
    url = f"{SERVICES}/{service_id}/status"
    status(api, service_id)  # cached now
    # Not live: to anyone else the service does not exist.
    assert api.get(url, headers=auth.provider("someone-else")).status_code == 404
    assert api.get(url, headers=auth.consumer()).status_code == 404
    anonymous = api.build_request("GET", url)
    del anonymous.headers["authorization"]
    assert api.send(anonymous).status_code == 404
    assert status(api, service_id, headers=auth.governance())["serviceId"] == service_id
    assert status(api, service_id, headers=auth.admin())["serviceId"] == service_id


def test_a_cache_hit_reads_no_more_than_the_change_token(
    api_without_prefect: TestClient, cache_mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record does not move here (its run stays queued: no Prefect to start it)."""
    api = api_without_prefect
    response = api.post(SERVICES, json=make_spec())
    assert response.status_code == 202, response.text
    service_id = response.json()["serviceId"]
    miss = database_reads(lambda: status(api, service_id))
    hit = database_reads(lambda: status(api, service_id))
    token_reads = 0 if cache_mode == "redis" else 1  # in-process: the database change stamp
    assert len(miss) == token_reads + 2, miss  # service with its latest version, then the phase results
    assert len(hit) == token_reads, hit


@pytest.fixture
def api_without_prefect(cache_mode: str, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app with a Prefect that never answers: submissions are accepted, and their runs stay queued with
    the first start attempt in flight for the whole test, so the record does not move."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as silent:  # accepts connections, never answers
        monkeypatch.setenv("MARKETPLACE_PREFECT__API_URL", f"http://127.0.0.1:{silent.getsockname()[1]}/api")
        monkeypatch.setenv("MARKETPLACE_PREFECT__START_TIMEOUT_SECONDS", "300")
        monkeypatch.setenv("MARKETPLACE_RATE_LIMIT__PUBLISH_LIMIT", "100000")
        reset_engine()
        with TestClient(create_app(), headers=auth.provider()) as test_client:
            yield test_client
        reset_engine()


def test_the_run_state_is_read_again_after_its_ttl(api: TestClient, prefect_server: Stack) -> None:
    body = publish(api)
    service_id, flow_run_id = body["serviceId"], body["flowRunId"]
    assert status(api, service_id)["flowRun"]["state"] == "SCHEDULED"
    with SyncPrefectClient(prefect_server.config.prefect_api_url) as prefect:
        prefect.set_flow_run_state(UUID(flow_run_id), Cancelled(message="moved by the test"), force=True)
    t0 = time.monotonic()
    assert status(api, service_id)["flowRun"]["state"] == "SCHEDULED", "served from the run-state cache"
    waited = eventually_state(api, service_id, "CANCELLED") + (time.monotonic() - t0)
    assert waited < 1.0 + DEADLINE_SECONDS


@pytest.fixture
def patient_api(database_url: str, prefect_server: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app reading polled run states again only once a minute."""
    monkeypatch.setenv("MARKETPLACE_PREFECT__RUN_STATE_SECONDS", "60")
    monkeypatch.setenv("MARKETPLACE_PREFECT__API_URL", prefect_server.config.prefect_api_url)
    monkeypatch.setenv("MARKETPLACE_RATE_LIMIT__PUBLISH_LIMIT", "100000")
    reset_engine()
    with TestClient(create_app(), headers=auth.provider()) as test_client:
        yield test_client
    reset_engine()


def test_a_run_our_records_say_ended_shows_its_final_state_within_a_moment(
    patient_api: TestClient, prefect_server: Stack
) -> None:
    """As the reconciler does: Prefect says CRASHED first, then our record says failed. The record's
    end makes the next read ask Prefect again (in the background), long before the interval."""
    api = patient_api
    body = publish(api)
    service_id, flow_run_id = body["serviceId"], body["flowRunId"]
    assert status(api, service_id)["flowRun"]["state"] == "SCHEDULED"
    with SyncPrefectClient(prefect_server.config.prefect_api_url) as prefect:
        prefect.set_flow_run_state(UUID(flow_run_id), Crashed(message="process killed"), force=True)
    with session_scope() as session:
        version = versions.latest(session, service_id)
        for step in (ServiceStatus.VALIDATING, ServiceStatus.FAILED):
            versions.transition(session, version.id, step, actor=Actor("reconciler"), reason="publish run crashed")
    report = status(api, service_id)
    assert (report["status"], report["versionStatus"]) == ("failed", "failed")
    assert eventually_state(api, service_id, "CRASHED") < DEADLINE_SECONDS, "read again at once, not after the TTL"


@pytest.fixture
def orchestrator(prefect_server: Stack) -> Iterator[Orchestrator]:
    """An orchestrator with a short run-state TTL, as the API uses it."""
    settings = PrefectSettings(api_url=prefect_server.config.prefect_api_url)
    orch = Orchestrator(settings, state_ttl=0.2)
    orch.open()
    yield orch
    orch.close()


def new_run(orch: Orchestrator, database_url: str) -> str:
    with session_scope() as session:
        service = services.create_submitted(session, make_spec(), Actor("acme"))
        version_id = versions.latest(session, service.id).id
    return orch.create_run(intake.publish_run(PrefectSettings(), service.id, version_id, make_spec()))


def test_the_orchestrator_serves_a_state_until_its_ttl_then_refreshes_it(
    orchestrator: Orchestrator, prefect_server: Stack, database_url: str
) -> None:
    run_id = new_run(orchestrator, database_url)
    assert orchestrator.run_state(run_id) is not None
    assert orchestrator.run_state(run_id).type == "SCHEDULED"  # type: ignore[union-attr]
    with SyncPrefectClient(prefect_server.config.prefect_api_url) as prefect:
        prefect.set_flow_run_state(UUID(run_id), Crashed(message="moved by the test"), force=True)
    assert orchestrator.run_state(run_id).type == "SCHEDULED"  # type: ignore[union-attr]
    time.sleep(0.25)
    deadline = time.monotonic() + DEADLINE_SECONDS
    while (state := orchestrator.run_state(run_id)) is not None and state.type != "CRASHED":
        assert time.monotonic() < deadline, "never refreshed"
        time.sleep(0.02)
    assert state is not None and state.name == "Crashed"
    # Asked for a state read after a moment: the old one is not shown (unknown), and read again at once.
    with SyncPrefectClient(prefect_server.config.prefect_api_url) as prefect:
        prefect.set_flow_run_state(UUID(run_id), Cancelled(message="moved again"), force=True)
    asked = time.time()
    assert orchestrator.run_state(run_id, not_before=asked) is None
    eventually(lambda: orchestrator.run_state(run_id, not_before=asked), "CANCELLED")


def test_a_run_the_orchestrator_changes_is_read_again(
    orchestrator: Orchestrator, prefect_server: Stack, database_url: str
) -> None:
    run_id = new_run(orchestrator, database_url)
    assert orchestrator.run_state(run_id).type == "SCHEDULED"  # type: ignore[union-attr]
    orchestrator.cancel(run_id)
    eventually(lambda: orchestrator.run_state(run_id), "CANCELLED")


def eventually(read: Any, state_type: str) -> float:
    """Seconds until `read()` gives a state of `state_type`."""
    t0 = time.monotonic()
    while (state := read()) is None or state.type != state_type:
        assert time.monotonic() - t0 < DEADLINE_SECONDS, f"never {state_type}; last {state}"
        time.sleep(0.01)
    return time.monotonic() - t0


def test_a_final_state_is_read_again_less_often_than_a_running_one() -> None:
    from api.status.run_states import RunStateCache

    reads: list[str] = []
    states = {"running": "RUNNING", "done": "COMPLETED"}

    def read_many(run_ids: list[str]) -> dict[str, str | None]:
        reads.extend(run_ids)
        return {run_id: states[run_id] for run_id in run_ids}

    cache: RunStateCache[str] = RunStateCache(read_many, ttl=0.05, is_final=lambda s: s == "COMPLETED", final_ttl=2)
    try:
        assert (cache.get("running"), cache.get("done")) == (None, None), "never waits: not read yet"
        deadline = time.monotonic() + DEADLINE_SECONDS
        while (cache.get("running"), cache.get("done")) != ("RUNNING", "COMPLETED"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.1)
        reads.clear()
        cache.get("running"), cache.get("done")
        deadline = time.monotonic() + DEADLINE_SECONDS
        while "running" not in reads:  # refreshed in the background
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert "done" not in reads
    finally:
        cache.close()


def test_a_state_read_before_the_run_ended_is_not_shown() -> None:
    from api.status.run_states import RunStateCache

    state = {"run": "RUNNING"}
    cache: RunStateCache[str] = RunStateCache(lambda run_ids: {r: state[r] for r in run_ids}, ttl=60)
    try:
        cache.put("run", "RUNNING")
        ended = time.time()
        state["run"] = "CRASHED"
        assert cache.get("run") == "RUNNING", "fresh enough when no moment is given"
        assert cache.get("run", not_before=ended) is None, "read before the run ended: unknown, not RUNNING"
        eventually_value(lambda: cache.get("run", not_before=ended), "CRASHED")
    finally:
        cache.close()


def eventually_value(read: Any, expected: Any) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while (value := read()) != expected:
        assert time.monotonic() < deadline, f"never {expected!r}; last {value!r}"
        time.sleep(0.01)
