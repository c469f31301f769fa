"""Provider health through the API: checks recorded as the monitor's task records them, the
automatic suspension after N breaching checks and reinstatement after N healthy ones (audited,
evented), the provider's health endpoint, and the observed availability of GET /services/{id}."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from checks.health_probes import ProbeReport
from core.domain import ServiceStatus
from storage.database import reset_engine, session_scope
from storage.repositories import audit, health, outbox, service_signals, services
from tasks.health import CheckInput, CheckResult, MonitorTarget, record_health_check
from tests.api.test_auth_api import live_service
from tests.support import auth
from tests.support.services import free_port

SERVICES = "/api/v1/services"
UP = ProbeReport(health_ok=True, health_status=200, health_ms=5.0, call_ok=True, call_status=200, call_ms=20.0)
DOWN = ProbeReport(health_ok=False, health_status=500, call_ok=False, call_status=500, errors=["health: answered 500"])


@pytest.fixture
def api(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app in-process; no Prefect server is needed here (no run is started), so none is given."""
    monkeypatch.setenv("MARKETPLACE_HEALTH__CONSECUTIVE_CHECKS", "2")
    monkeypatch.setenv("MARKETPLACE_PREFECT__API_URL", f"http://127.0.0.1:{free_port()}/api")
    reset_engine()
    with TestClient(create_app()) as client:
        yield client
    reset_engine()


def target(service_id: str) -> MonitorTarget:
    with session_scope() as session:
        found = [t for t in health.monitored(session) if t.service_id == service_id]
    assert found, f"{service_id} is not monitored"
    return MonitorTarget(**vars(found[0]))


def check(service_id: str, at: datetime, probes: ProbeReport) -> CheckResult:
    """One check, exactly as the monitor-services flow records it (the task's body, without Prefect)."""
    return record_health_check(CheckInput(target=target(service_id), probes=probes, at=at, flow_run_id=None))


def trail(service_id: str) -> tuple[list[tuple[str, str, str | None]], list[str]]:
    with session_scope() as session:
        moves = [(a.actor, a.to_status, a.reason) for a in audit.for_service(session, service_id) if a.to_status]
        events = [e.event_type for e in outbox.for_aggregate(session, service_id)]
    return moves, events


def test_breaches_suspend_and_recovery_reinstates_audited_and_evented(api: TestClient) -> None:
    service_id = live_service("acme-chat")
    t0 = datetime.now(UTC)
    first = check(service_id, t0, DOWN)
    assert (first.state, first.status, first.action, first.breached) == ("breaching", "active", None, True)
    public = api.get(f"{SERVICES}/{service_id}").json()["observedSla"]
    assert (public["availability"], public["checks"], public["state"]) == (0.0, 1, "breaching")

    _, events_before = trail(service_id)
    second = check(service_id, t0 + timedelta(seconds=60), DOWN)
    assert (second.action, second.status, second.state) == ("suspended", "suspended", "suspended")
    moves, events = trail(service_id)
    actor, to_status, reason = moves[-1]
    assert (actor, to_status) == ("health-monitor", "suspended")
    assert reason is not None and reason.startswith("SLA breached in 2 consecutive health checks: availability 0%")
    assert "health: answered 500" in reason
    assert events[len(events_before) :] == ["service_suspended"]

    again = check(service_id, t0 + timedelta(seconds=61), DOWN)  # the same interval: a rerun
    assert again.repeated and again.check_id == second.check_id
    assert trail(service_id) == (moves, events), "a rerun moves nothing and emits nothing"

    seen = api.get(f"{SERVICES}/{service_id}/health", headers=auth.provider())
    assert seen.status_code == 200, seen.text
    body = seen.json()
    assert (body["status"], body["state"], body["suspendedByMonitor"]) == ("suspended", "suspended", True)
    assert (body["consecutiveBreaches"], body["checksToSuspend"]) == (2, 2)
    assert body["sla"] == {"availability": 99.9, "maxLatencyMs": 2000}
    assert [c["action"] for c in body["checks"]] == ["suspended", None], "newest first"
    assert body["checks"][0]["reasons"][0] == "availability 0% below the promised 99.9%"
    assert api.get(f"{SERVICES}/{service_id}/health", headers=auth.governance()).status_code == 200
    # a suspended service is hidden from everyone but its owner and staff (404, as for a missing one)
    for outsider in (auth.provider("other"), auth.consumer()):
        assert api.get(f"{SERVICES}/{service_id}/health", headers=outsider).status_code == 404
    assert api.get(f"{SERVICES}/{service_id}/health").status_code == 401, "a token is needed at all"

    recovering = check(service_id, t0 + timedelta(seconds=120), UP)
    assert (recovering.state, recovering.status, recovering.action) == ("suspended", "suspended", None)
    assert api.get(f"{SERVICES}/{service_id}/health", headers=auth.admin()).json()["state"] == "recovering"
    back = check(service_id, t0 + timedelta(seconds=180), UP)
    # live again: others see it, but its health figures stay its owner's and staff's
    assert api.get(f"{SERVICES}/{service_id}/health", headers=auth.provider("other")).status_code == 403
    assert api.get(f"{SERVICES}/{service_id}/health").status_code == 401
    assert (back.action, back.status) == ("reinstated", "active")
    moves, events = trail(service_id)
    assert moves[-1][:2] == ("health-monitor", "active")
    assert events[-1] == "service_updated"

    public = api.get(f"{SERVICES}/{service_id}").json()
    assert public["status"] == "active"
    assert (public["observedSla"]["availability"], public["observedSla"]["checks"]) == (50.0, 4)
    assert public["observedSla"]["state"] == "healthy"


def test_an_admin_suspension_is_never_lifted_by_the_monitor(api: TestClient) -> None:
    service_id = live_service("acme-chat")
    ours = target(service_id)
    suspended = api.post(f"{SERVICES}/{service_id}/suspension", json={"reason": "abuse"}, headers=auth.admin())
    assert suspended.status_code == 200
    with session_scope() as session:
        assert service_id not in {t.service_id for t in health.monitored(session)}
    for n in range(3):  # a run that listed it before the admin acted
        result = record_health_check(CheckInput(target=ours, probes=UP, at=datetime.now(UTC) + timedelta(minutes=n)))
        assert (result.state, result.check_id) == ("skipped", None)
    with session_scope() as session:
        assert services.get(session, service_id).status == "suspended"


def test_a_deprecated_service_returns_to_deprecated(api: TestClient) -> None:
    service_id = live_service("acme-chat")
    with session_scope() as session:
        services.transition(session, service_id, ServiceStatus.DEPRECATED, actor=services.SYSTEM, reason="old")
    t0 = datetime.now(UTC)
    for n, probes in enumerate([DOWN, DOWN, UP, UP]):
        last = check(service_id, t0 + timedelta(minutes=n), probes)
    assert (last.action, last.status) == ("reinstated", "deprecated")


def test_each_check_feeds_the_search_signals(api: TestClient) -> None:
    """Search ranks and filters by the monitor's figures: the observed availability over the span shown
    with the service, and the latest check's latency p95."""
    service_id = live_service("acme-signals")
    t0 = datetime.now(UTC)
    check(service_id, t0, UP)
    with session_scope() as session:
        first = service_signals.get(session, service_id)
    assert first is not None and first.availability == 100.0
    check(service_id, t0 + timedelta(minutes=1), DOWN)
    with session_scope() as session:
        second = service_signals.get(session, service_id)
    assert second is not None and second.availability is not None and second.availability < 100.0
    assert second.latency_p95_ms == first.latency_p95_ms, "a window without a successful call keeps the last p95"
