"""A service the health monitor suspended answers 503 with the reason; an admin's suspension stays 403."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from sqlalchemy import update

from storage.database import mark_services_changed, session_scope
from storage.models import AuditLog, Service
from storage.repositories.health import MONITOR
from tests.gateway.conftest import PLAN, Setup
from tests.support.gateway import add_service, consumer_with_key


def suspend(service_id: str, actor: str, reason: str) -> None:
    """As the lifecycle moves leave it: the status and the audit record that says who and why."""
    with session_scope() as session:
        session.execute(
            update(Service).where(Service.id == service_id).values(status="suspended", updated_at=datetime.now(UTC))
        )
        session.add(
            AuditLog(service_id=service_id, action="status_changed", actor=actor, to_status="suspended", reason=reason)
        )
        mark_services_changed(session, [service_id])


def test_monitor_suspension_is_503_with_retry_after_admin_is_403(setup: Setup) -> None:
    by_monitor = setup.service_id
    by_admin = add_service(setup.provider.url, name="admin-chat")
    _, token = consumer_with_key("consumer-2", [by_monitor, by_admin], PLAN)
    with setup.gateway(MARKETPLACE_HEALTH__INTERVAL_SECONDS="30") as gw:

        def invoke(service_id: str) -> httpx.Response:
            url = f"{gw.url}/api/v1/services/{service_id}/invoke"
            return httpx.post(url, json={"input": {}}, headers={"Authorization": f"Bearer {token}"})

        assert invoke(by_monitor).status_code == 200
        suspend(by_monitor, MONITOR.id, "SLA breached in 3 consecutive health checks: availability 0%")
        suspend(by_admin, "root-admin", "abuse report")
        deadline = datetime.now(UTC).timestamp() + 10
        while invoke(by_monitor).status_code != 503:
            assert datetime.now(UTC).timestamp() < deadline, "the gateway did not pick the suspension up"
        calls_before = len(setup.provider.requests)
        unavailable, refused = invoke(by_monitor), invoke(by_admin)
    assert unavailable.status_code == 503
    assert unavailable.headers["Retry-After"] == "30"
    error = unavailable.json()["error"]
    assert error["code"] == "service_unavailable"
    assert error["message"].endswith("SLA breached in 3 consecutive health checks: availability 0%")
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "service_suspended")
    assert len(setup.provider.requests) == calls_before, "nothing reaches a suspended provider"
