"""A service's health as the monitor sees it: for its provider, governance and admin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter
from sqlalchemy.orm import Session

from api import access
from api.auth import AnyRole
from api.deps import DbSession, SettingsDep
from api.errors import ErrorResponse
from api.health_schemas import HealthCheckOut, PromisedSla, ServiceHealthOut
from api.schemas import ObservedSla
from core.settings import HealthSettings
from core.sla import Promise
from storage.repositories import health, services

router = APIRouter(tags=["services"])
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 403, 404)}


def observed_sla(session: Session, service_id: str, settings: HealthSettings) -> ObservedSla:
    """Availability over the observed window (all checks in it), latency and state of the latest check."""
    since = datetime.now(UTC) - timedelta(seconds=settings.observed_window_seconds)
    found = health.observed(session, [service_id], since).get(service_id)
    latest = health.recent_checks(session, service_id, 1)
    state = health.state_of(session, service_id)
    return ObservedSla(
        availability=found.availability if found else None,
        window_seconds=settings.observed_window_seconds,
        checks=found.checks if found else 0,
        latency_p95_ms=latest[0].latency_p95_ms if latest else None,
        state=state.state if state else None,
        checked_at=latest[0].checked_at if latest else None,
    )


@router.get(
    "/services/{service_id}/health", response_model=ServiceHealthOut, responses=AUTH_ERRORS, summary="Service health"
)
def service_health(service_id: str, session: DbSession, principal: AnyRole, settings: SettingsDep) -> ServiceHealthOut:
    """The monitor's verdict, the promised and observed SLA figures and the latest checks (owner and staff)."""
    service = services.get(session, service_id)
    access.require_internals(principal, service_id, service.provider_id, service.status)
    state = health.state_of(session, service_id)
    promise = Promise.of(service.spec or {})
    ours = service.status == health.SUSPENDED and bool(health.suspended_by_monitor(session, [service_id]))
    checks = health.recent_checks(session, service_id, settings.health.history_limit)
    return ServiceHealthOut(
        service_id=service_id,
        status=service.status,
        state=state.state if state else None,
        suspended_by_monitor=ours,
        consecutive_breaches=state.consecutive_breaches if state else 0,
        consecutive_healthy=state.consecutive_healthy if state else 0,
        checks_to_suspend=settings.health.consecutive_checks,
        interval_seconds=settings.health.interval_seconds,
        suspended_at=state.suspended_at if state else None,
        reinstated_at=state.reinstated_at if state else None,
        sla=PromisedSla(availability=promise.availability, max_latency_ms=promise.max_latency_ms),
        observed=observed_sla(session, service_id, settings.health),
        checks=[HealthCheckOut.model_validate(c) for c in checks],
    )
