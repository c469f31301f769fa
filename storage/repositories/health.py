"""Provider health: which services the monitor checks, their traffic, each check's verdict and the
automatic suspension and reinstatement it leads to (one transaction per check)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from core.domain import ServiceStatus
from core.sla import Traffic
from storage.database import mark_services_changed
from storage.health_models import ServiceHealth, ServiceHealthCheck
from storage.models import Service, UsageRecord
from storage.repositories import routing, services
from storage.repositories.services import Actor

MONITOR = Actor("health-monitor", "system")
CALLABLE = (ServiceStatus.ACTIVE.value, ServiceStatus.DEPRECATED.value)
SUSPENDED = ServiceStatus.SUSPENDED.value
HEALTHY, BREACHING, SUSPENDED_STATE, RECOVERING = "healthy", "breaching", "suspended", "recovering"


@dataclass(frozen=True)
class Target:
    """A service the monitor checks: callable, or suspended by the monitor itself (to see it recover)."""

    service_id: str
    name: str
    version: str
    status: str
    provider_id: str
    endpoint: dict[str, Any]
    sla: dict[str, Any]


def monitored(session: Session) -> list[Target]:
    """Active and deprecated services, and those the monitor suspended (an admin's suspension is left alone)."""
    rows = session.execute(
        select(
            Service.id,
            Service.name,
            Service.version,
            Service.status,
            Service.provider_id,
            Service.spec["endpoint"],
            Service.spec["sla"],
        ).where(Service.status.in_((*CALLABLE, SUSPENDED)))
    ).all()
    ours = suspended_by_monitor(session, [r[0] for r in rows if r[3] == SUSPENDED])
    return [
        Target(sid, name, version, status, provider, endpoint or {}, sla or {})
        for sid, name, version, status, provider, endpoint, sla in rows
        if status != SUSPENDED or sid in ours
    ]


def suspended_by_monitor(session: Session, service_ids: Sequence[str]) -> set[str]:
    """Which of these (suspended) services the health monitor suspended, by their latest suspension."""
    return {sid for sid, found in routing.suspensions(session, service_ids).items() if found.actor == MONITOR.id}


# --- traffic -----------------------------------------------------------------------------------

# Calls the gateway refused on its own (limits, quotas, keys, a suspended service) carry an error
# code and never reached the provider; `upstream_*` codes are the provider's failures.
_UPSTREAM = UsageRecord.error.like("upstream\\_%", escape="\\")
_REACHED = or_(UsageRecord.error.is_(None), _UPSTREAM)
_FAILED = or_(and_(UsageRecord.error.is_(None), UsageRecord.status >= 500), _UPSTREAM)
_SUCCEEDED = and_(UsageRecord.error.is_(None), UsageRecord.status < 500)  # not ~_FAILED: NULL LIKE is NULL
# A stream lasts as long as the model writes; its first byte is the provider's delay.
_LATENCY = case(
    (and_(UsageRecord.stream.is_(True), UsageRecord.ttfb_ms.is_not(None)), UsageRecord.ttfb_ms),
    else_=UsageRecord.latency_ms,
)


def traffic(session: Session, service_id: str, start: datetime, end: datetime) -> Traffic:
    """The gateway's calls to the service in [start, end): how many reached it, how many failed, p95."""
    window = (UsageRecord.service_id == service_id, UsageRecord.occurred_at >= start, UsageRecord.occurred_at < end)
    requests, errors = session.execute(
        select(func.count(), func.coalesce(func.sum(case((_FAILED, 1), else_=0)), 0)).where(*window, _REACHED)
    ).one()
    ok = (*window, _SUCCEEDED)
    if session.get_bind().dialect.name == "postgresql":
        p95 = session.scalar(select(func.percentile_disc(0.95).within_group(_LATENCY)).where(*ok))
    else:
        p95 = _nearest_rank([float(v) for v in session.scalars(select(_LATENCY).where(*ok))], 0.95)
    return Traffic(int(requests), int(errors), float(p95) if p95 is not None else None)


def _nearest_rank(samples: list[float], fraction: float) -> float | None:
    if not samples:
        return None
    samples.sort()
    return samples[max(1, math.ceil(fraction * len(samples))) - 1]


# --- recording a check -------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckOutcome:
    """What one check changed."""

    service_id: str
    check_id: int | None  # None: not recorded (the service is no longer the monitor's to check)
    state: str
    status: str  # the service's status after the check
    breached: bool
    availability: float | None
    action: str | None = None  # suspended | reinstated (also when repeated: what that check did)
    reason: str | None = None  # of the action
    repeated: bool = False  # this interval was checked before: nothing changed now


def apply_check(session: Session, check: ServiceHealthCheck, needed: int) -> CheckOutcome:
    """Store the check and move the service when its run of verdicts is long enough.

    The service row is locked first, so two runs checking the same interval at once are
    serialised: the second finds the first's check and changes nothing (`repeated`).
    """
    service = services.get(session, check.service_id, for_update=True)
    existing = session.scalar(
        select(ServiceHealthCheck).where(
            ServiceHealthCheck.service_id == check.service_id, ServiceHealthCheck.slot == check.slot
        )
    )
    if existing is not None:
        return _outcome(existing, service.status, repeated=True)
    ours = service.status == SUSPENDED and bool(suspended_by_monitor(session, [service.id]))
    if service.status not in CALLABLE and not ours:
        return CheckOutcome(service.id, None, "skipped", service.status, check.breached, None)
    health = _state(session, service.id)
    if check.breached:
        health.consecutive_breaches, health.consecutive_healthy = health.consecutive_breaches + 1, 0
    else:
        health.consecutive_breaches, health.consecutive_healthy = 0, health.consecutive_healthy + 1
    check.service_status = service.status
    session.add(check)
    session.flush()  # the check's id, for the audit record of a move
    if not ours and check.breached and health.consecutive_breaches >= needed:
        _suspend(session, service, check, health, needed)
    elif ours and not check.breached and health.consecutive_healthy >= needed:
        _reinstate(session, service, check, health, needed)
    health.state = _state_name(service.status == SUSPENDED, health)
    health.last_slot, health.last_check_id = check.slot, check.id
    mark_services_changed(session, [service.id])  # GET /services/{id} shows the new observed figures
    session.flush()
    return _outcome(check, service.status)


def _state(session: Session, service_id: str) -> ServiceHealth:
    health = session.get(ServiceHealth, service_id)
    if health is None:  # the service row is locked: no other transaction creates it meanwhile
        health = ServiceHealth(service_id=service_id, state=HEALTHY, consecutive_breaches=0, consecutive_healthy=0)
        session.add(health)
    return health


def _state_name(suspended: bool, health: ServiceHealth) -> str:
    if suspended:
        return RECOVERING if health.consecutive_healthy else SUSPENDED_STATE
    return BREACHING if health.consecutive_breaches else HEALTHY


def _figures(check: ServiceHealthCheck) -> dict[str, Any]:
    return {
        "healthCheckId": check.id,
        "availability": check.availability,
        "latencyP95Ms": check.latency_p95_ms,
        "slaAvailability": check.sla_availability,
        "slaLatencyMs": check.sla_latency_ms,
    }


def _suspend(session: Session, service: Service, check: ServiceHealthCheck, health: ServiceHealth, needed: int) -> None:
    reason = f"SLA breached in {needed} consecutive health checks: {'; '.join(check.reasons)}"
    services.transition(
        session,
        service.id,
        ServiceStatus.SUSPENDED,
        actor=MONITOR,
        reason=reason,
        event_type="service_suspended",
        flow_run_id=check.flow_run_id,
        details=_figures(check),
    )
    check.action, check.note = "suspended", reason
    health.suspended_at, health.reinstated_at = datetime.now(UTC), None


def _reinstate(
    session: Session, service: Service, check: ServiceHealthCheck, health: ServiceHealth, needed: int
) -> None:
    # back to where it was: a deprecated service keeps its sunset and its scheduled retirement
    target = ServiceStatus.DEPRECATED if service.deprecated_at else ServiceStatus.ACTIVE
    reason = f"SLA met in {needed} consecutive health checks: automatic suspension lifted"
    services.transition(
        session,
        service.id,
        target,
        actor=MONITOR,
        reason=reason,
        event_type="service_updated",
        flow_run_id=check.flow_run_id,
        details=_figures(check),
    )
    check.action, check.note = "reinstated", reason
    health.reinstated_at = datetime.now(UTC)


def _outcome(check: ServiceHealthCheck, status: str, *, repeated: bool = False) -> CheckOutcome:
    state = "suspended" if status == SUSPENDED else ("breaching" if check.breached else "healthy")
    return CheckOutcome(
        service_id=check.service_id,
        check_id=check.id,
        state=state,
        status=status,
        breached=check.breached,
        availability=check.availability,
        action=check.action,
        reason=check.note,
        repeated=repeated,
    )


# --- reads for the API -------------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """Availability over a span of checks (sum of successes over sum of attempts)."""

    availability: float | None  # percent; None: no check in the span
    checks: int
    since: datetime


def observed(session: Session, service_ids: Sequence[str], since: datetime) -> dict[str, Observed]:
    """Each service's observed availability since `since` (services without a check are left out)."""
    if not service_ids:
        return {}
    stmt = (
        select(
            ServiceHealthCheck.service_id,
            func.count(),
            func.sum(ServiceHealthCheck.successes),
            func.sum(ServiceHealthCheck.attempts),
        )
        .where(ServiceHealthCheck.service_id.in_(service_ids), ServiceHealthCheck.checked_at >= since)
        .group_by(ServiceHealthCheck.service_id)
    )
    found = {}
    for sid, count, successes, attempts in session.execute(stmt):
        percent = round(100.0 * int(successes) / int(attempts), 3) if attempts else None
        found[sid] = Observed(percent, int(count), since)
    return found


def state_of(session: Session, service_id: str) -> ServiceHealth | None:
    return session.get(ServiceHealth, service_id)


def recent_checks(session: Session, service_id: str, limit: int) -> Sequence[ServiceHealthCheck]:
    """The service's latest checks, newest first."""
    stmt = (
        select(ServiceHealthCheck)
        .where(ServiceHealthCheck.service_id == service_id)
        .order_by(ServiceHealthCheck.slot.desc(), ServiceHealthCheck.id.desc())
        .limit(limit)
    )
    return session.scalars(stmt).all()
