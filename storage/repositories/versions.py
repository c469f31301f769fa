"""Service versions and their pass through the publish pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.domain import LIVE, ServiceStatus, can_transition
from core.errors import InvalidTransitionError, NotFoundError
from storage.models import Service, ServiceVersion, new_id
from storage.repositories import audit, outbox
from storage.repositories.services import Actor, add_unique, event_data
from storage.repositories.services import get as get_service


def create_next(
    session: Session, service: Service, spec: dict[str, Any], actor: Actor, version_id: str | None = None
) -> ServiceVersion:
    """A new version of a live service, `submitted`; the service stays on its current version meanwhile."""
    version = ServiceVersion(
        id=version_id or new_id(),
        service_id=service.id,
        name=service.name,
        version=spec["version"],
        spec=spec,
        status=ServiceStatus.SUBMITTED.value,
    )
    add_unique(session, [version], spec)
    audit.append(
        session,
        service_id=service.id,
        action="version_submitted",
        **actor.audit_origin(),
        reason=f"version {version.version} submitted",
        details={"version": version.version, "versionId": version.id},
    )
    outbox.add(
        session,
        aggregate_id=service.id,
        event_type="version_submitted",
        data=event_data(service, newVersion=version.version),
    )
    return version


def get(session: Session, version_id: str, *, for_update: bool = False) -> ServiceVersion:
    query = select(ServiceVersion).where(ServiceVersion.id == version_id)
    if for_update:
        query = query.with_for_update()
    version = session.scalars(query).one_or_none()
    if version is None:
        raise NotFoundError(f"version {version_id} not found")
    return version


def exists(session: Session, version_id: str) -> bool:
    return session.scalar(select(ServiceVersion.id).where(ServiceVersion.id == version_id)) is not None


def for_service(
    session: Session, service_id: str, offset: int = 0, limit: int | None = None
) -> Sequence[ServiceVersion]:
    """Every version of a service (or a page of them), oldest first."""
    query = select(ServiceVersion).where(ServiceVersion.service_id == service_id)
    order = (ServiceVersion.created_at, ServiceVersion.id)  # the id makes pages stable under equal times
    return session.scalars(query.order_by(*order).offset(offset).limit(limit)).all()


def count_for_service(session: Session, service_id: str) -> int:
    """How many versions a service has."""
    return session.scalar(select(func.count()).where(ServiceVersion.service_id == service_id)) or 0


def latest(session: Session, service_id: str) -> ServiceVersion:
    """The most recently submitted version: the publication the status endpoint reports on."""
    query = (
        select(ServiceVersion)
        .where(ServiceVersion.service_id == service_id)
        .order_by(ServiceVersion.created_at.desc(), ServiceVersion.id)
        .limit(1)
    )
    version = session.scalars(query).one_or_none()
    if version is None:
        raise NotFoundError(f"service {service_id} has no versions")
    return version


def in_flight(session: Session, service_id: str) -> ServiceVersion | None:
    """A version of the service still going through the pipeline, if any."""
    pipeline = [s.value for s in ServiceStatus if s not in LIVE and s.value not in ("failed", "retired", "superseded")]
    query = select(ServiceVersion).where(ServiceVersion.service_id == service_id, ServiceVersion.status.in_(pipeline))
    return session.scalars(query).first()


def mirrors_service(service: Service, version: ServiceVersion) -> bool:
    """A first publication: the service is not live yet and moves with this version."""
    return service.version == version.version and ServiceStatus(service.status) not in LIVE


def set_flow_run(session: Session, version_id: str, flow_run_id: str) -> None:
    version = get(session, version_id)
    version.flow_run_id = flow_run_id
    service = get_service(session, version.service_id)
    if service.version == version.version:
        service.flow_run_id = flow_run_id
    session.flush()


def set_phase(session: Session, version_id: str, phase: str) -> None:
    """Record the phase the pipeline is in, for the status endpoint."""
    version = get(session, version_id)
    version.current_phase = phase
    service = get_service(session, version.service_id)
    if mirrors_service(service, version):
        service.current_phase = phase
    session.flush()


def set_registry_id(session: Session, version_id: str, registry_id: str | None) -> None:
    version = get(session, version_id)
    version.registry_id = registry_id
    service = get_service(session, version.service_id)
    if mirrors_service(service, version):
        service.registry_id = registry_id
    session.flush()


def transition(
    session: Session,
    version_id: str,
    target: ServiceStatus,
    *,
    actor: Actor,
    reason: str,
    event_type: str | None = None,
    flow_run_id: str | None = None,
    failure_phase: str | None = None,
    details: dict[str, Any] | None = None,
    published_at: datetime | None = None,
) -> ServiceVersion:
    """Move a version along the pipeline: state, audit record and outbox event in one transaction.

    A first publication moves the service with it; a later version that becomes active
    replaces the live one, which is kept as `superseded`. Becoming active stamps `published_at`
    (now, unless the caller chose the instant, e.g. the one it put into the search index).
    """
    version = get(session, version_id, for_update=True)
    service = get_service(session, version.service_id, for_update=True)
    current = ServiceStatus(version.status)
    if current is target:
        return version  # a retried task repeating a move it already made
    if not can_transition(current, target):
        raise InvalidTransitionError(f"version {version.version} is {current.value}; it cannot become {target.value}")
    mirror = mirrors_service(service, version)
    from_status = service.status if mirror else current.value
    version.status = target.value
    if target is ServiceStatus.FAILED:
        version.failure_phase = failure_phase or version.current_phase
        version.failure_reason = reason
    if target is ServiceStatus.ACTIVE:
        version.published_at = published_at or datetime.now(UTC)
    if mirror:
        _mirror(service, version)
    elif target is ServiceStatus.ACTIVE:
        _promote(session, service, version)
    audit.append(
        session,
        service_id=service.id,
        action="status_changed" if mirror else "version_status_changed",
        **actor.audit_origin(),
        from_status=from_status,
        to_status=target.value,
        reason=reason,
        flow_run_id=flow_run_id or version.flow_run_id,
        details={"version": version.version, **(details or {})},
        before={"status": from_status, "version": version.version},
        after={"status": target.value, "version": version.version},
    )
    if event_type:
        outbox.add(
            session,
            aggregate_id=service.id,
            event_type=event_type,
            data=event_data(service, reason, versionStatus=version.status, publishedVersion=version.version),
        )
    session.flush()
    return version


def _mirror(service: Service, version: ServiceVersion) -> None:
    service.status = version.status
    service.current_phase = version.current_phase
    service.failure_phase = version.failure_phase
    service.failure_reason = version.failure_reason
    if version.published_at and service.published_at is None:
        service.published_at = version.published_at


def _promote(session: Session, service: Service, version: ServiceVersion) -> None:
    """The new version goes live; the old one is kept as `superseded`."""
    if service.status in (ServiceStatus.DEPRECATED.value, ServiceStatus.SUSPENDED.value):
        raise InvalidTransitionError(f"a {service.status} service cannot take a new version")
    previous = session.scalars(
        select(ServiceVersion).where(ServiceVersion.service_id == service.id, ServiceVersion.version == service.version)
    ).one()
    if previous.id != version.id:
        previous.status = ServiceStatus.SUPERSEDED.value
    spec = version.spec
    service.version = version.version
    service.spec = spec
    service.description = spec["description"]
    service.category = spec["category"]
    service.tags = list(spec.get("tags", []))
    service.registry_id = version.registry_id
    service.flow_run_id = version.flow_run_id
    service.current_phase = version.current_phase
    service.published_at = version.published_at
