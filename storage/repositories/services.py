"""Services and their versions, and the one way their status changes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.domain import ServiceStatus, can_transition
from core.errors import DuplicateServiceError, InvalidTransitionError, NotFoundError
from storage.models import Service, ServiceVersion, new_id
from storage.repositories import audit, outbox


@dataclass(frozen=True)
class Actor:
    """Who caused a change, for the audit trail."""

    id: str
    role: str | None = None


SYSTEM = Actor("publish-flow", "system")


@dataclass(frozen=True)
class ServiceFilter:
    status: str | None = None
    category: str | None = None
    provider_id: str | None = None


def create_submitted(session: Session, spec: dict[str, Any], actor: Actor, service_id: str | None = None) -> Service:
    """Store a new service as `submitted`, with its first version, audit record and event.

    Raises DuplicateServiceError when name+version exists; nothing is kept then.
    """
    service = Service(
        id=service_id or new_id(),
        name=spec["name"],
        version=spec["version"],
        description=spec["description"],
        provider_id=spec["provider"]["id"],
        provider_name=spec["provider"]["name"],
        category=spec["category"],
        tags=list(spec.get("tags", [])),
        spec=spec,
        status=ServiceStatus.SUBMITTED.value,
        current_phase=None,
    )
    version = ServiceVersion(
        service_id=service.id, name=service.name, version=service.version, spec=spec, status=service.status
    )
    try:
        with session.begin_nested():  # a savepoint, so the caller's transaction survives the conflict
            session.add(service)
            session.flush()
            session.add(version)
            session.flush()
    except IntegrityError as exc:
        raise DuplicateServiceError(
            f"service {spec['name']!r} version {spec['version']!r} already exists",
            [{"pointer": "/version", "message": "name+version must be unique"}],
        ) from exc
    audit.append(
        session,
        service_id=service.id,
        action="submitted",
        actor=actor.id,
        actor_role=actor.role,
        to_status=service.status,
        reason="submitted for publication",
    )
    outbox.add(session, aggregate_id=service.id, event_type="service_submitted", data=_event_data(service))
    return service


def get(session: Session, service_id: str, *, for_update: bool = False) -> Service:
    """One service, or NotFoundError."""
    query = select(Service).where(Service.id == service_id)
    if for_update:
        query = query.with_for_update()
    service = session.scalars(query).one_or_none()
    if service is None:
        raise NotFoundError(f"service {service_id} not found")
    return service


def list_services(session: Session, filters: ServiceFilter, offset: int, limit: int) -> tuple[Sequence[Service], int]:
    """A page of services, newest first, and the total matching the filters."""
    query = select(Service)
    if filters.status:
        query = query.where(Service.status == filters.status)
    if filters.category:
        query = query.where(Service.category == filters.category)
    if filters.provider_id:
        query = query.where(Service.provider_id == filters.provider_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = session.scalars(query.order_by(Service.created_at.desc(), Service.id).offset(offset).limit(limit)).all()
    return page, total


def set_flow_run(session: Session, service_id: str, flow_run_id: str) -> None:
    """Remember which Prefect flow run publishes the service."""
    service = get(session, service_id)
    service.flow_run_id = flow_run_id
    for version in _versions(session, service):
        if version.version == service.version:
            version.flow_run_id = flow_run_id
    session.flush()


def set_phase(session: Session, service_id: str, phase: str) -> None:
    """Record the phase the pipeline is in, for the status endpoint."""
    get(session, service_id).current_phase = phase
    session.flush()


def set_registry_id(session: Session, service_id: str, registry_id: str | None) -> None:
    get(session, service_id).registry_id = registry_id
    session.flush()


def transition(
    session: Session,
    service_id: str,
    target: ServiceStatus,
    *,
    actor: Actor,
    reason: str,
    event_type: str | None = None,
    flow_run_id: str | None = None,
    failure_phase: str | None = None,
    details: dict[str, Any] | None = None,
) -> Service:
    """Move a service along its lifecycle: state, audit record and outbox event in one transaction."""
    service = get(session, service_id, for_update=True)
    current = ServiceStatus(service.status)
    if current is target:
        return service  # a retried task repeating a transition it already made
    if not can_transition(current, target):
        raise InvalidTransitionError(f"service {service_id} cannot go from {current} to {target}")
    service.status = target.value
    if target is ServiceStatus.FAILED:
        service.failure_phase = failure_phase or service.current_phase
        service.failure_reason = reason
    if target is ServiceStatus.ACTIVE and service.published_at is None:
        service.published_at = datetime.now(UTC)
    for version in _versions(session, service):
        if version.version == service.version:
            version.status = target.value
            version.published_at = service.published_at
    audit.append(
        session,
        service_id=service_id,
        action="status_changed",
        actor=actor.id,
        actor_role=actor.role,
        from_status=current.value,
        to_status=target.value,
        reason=reason,
        flow_run_id=flow_run_id or service.flow_run_id,
        details=details,
    )
    if event_type:
        outbox.add(session, aggregate_id=service_id, event_type=event_type, data=_event_data(service, reason))
    session.flush()
    return service


def _versions(session: Session, service: Service) -> Sequence[ServiceVersion]:
    return session.scalars(select(ServiceVersion).where(ServiceVersion.service_id == service.id)).all()


def _event_data(service: Service, reason: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "serviceId": service.id,
        "name": service.name,
        "version": service.version,
        "providerId": service.provider_id,
        "category": service.category,
        "pricingModel": service.spec.get("pricing", {}).get("model"),
        "status": service.status,
    }
    if reason:
        data["reason"] = reason
    return data
