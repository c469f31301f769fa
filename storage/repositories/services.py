"""Services: creation, reads, and service-level lifecycle moves (deprecate, retire, reinstate)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict, cast

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.domain import ServiceStatus, can_transition
from core.errors import DuplicateServiceError, InvalidTransitionError, NotFoundError
from storage.bulk import insert_new
from storage.database import mark_services_changed
from storage.models import Base, Service, ServiceArchive, ServiceVersion, new_id
from storage.repositories import audit, outbox, paging


@dataclass(frozen=True)
class Actor:
    """Who caused a change, for the audit trail."""

    id: str
    role: str | None = None
    ip: str | None = None  # the caller's address and user agent, when a request made the change
    user_agent: str | None = None

    def audit_origin(self) -> AuditOrigin:
        """The audit columns saying who and from where."""
        return {"actor": self.id, "actor_role": self.role, "actor_ip": self.ip, "user_agent": self.user_agent}


class AuditOrigin(TypedDict):
    actor: str
    actor_role: str | None
    actor_ip: str | None
    user_agent: str | None


SYSTEM = Actor("publish-flow", "system")


@dataclass(frozen=True)
class ServiceFilter:
    status: str | None = None
    category: str | None = None
    provider_id: str | None = None
    statuses: tuple[str, ...] | None = None  # any of these (an empty tuple matches nothing)


def create_submitted(
    session: Session, spec: dict[str, Any], actor: Actor, service_id: str | None = None, version_id: str | None = None
) -> Service:
    """Store a new service as `submitted`, with its first version, audit record and event.

    Raises DuplicateServiceError when name+version exists; nothing is kept then, and the caller's
    transaction goes on.
    """
    rows = submission(spec, actor, service_id or new_id(), version_id or new_id())
    with _unique(session, spec):
        insert_new(session, *rows)
    service = cast(Service, rows[0])
    mark_services_changed(session, [service.id])
    return service


def submission(spec: dict[str, Any], actor: Actor, service_id: str, version_id: str) -> list[Base]:
    """The rows of a new submission, not written yet: the service, its first version (both
    `submitted`), the audit record and the `service_submitted` event. Written by plain INSERTs
    (storage/bulk.py): on the intake's hot path the unit of work's bookkeeping was most of the cost."""
    service = Service(
        id=service_id,
        name=spec["name"],
        version=spec["version"],
        description=spec["description"],
        provider_id=spec["provider"]["id"],
        provider_name=spec["provider"]["name"],
        category=spec["category"],
        tags=list(spec.get("tags", [])),
        spec=spec,
        status=ServiceStatus.SUBMITTED.value,
    )
    version = ServiceVersion(
        id=version_id,
        service_id=service.id,
        name=service.name,
        version=service.version,
        spec=spec,
        status=service.status,
    )
    record = audit.entry(
        service_id=service.id,
        action="submitted",
        **actor.audit_origin(),
        to_status=service.status,
        reason="submitted for publication",
        details={"version": service.version},
        after={"status": service.status, "version": service.version},
    )
    event = outbox.event(aggregate_id=service.id, event_type="service_submitted", data=event_data(service))
    return [service, version, record, event]


def require_unique(session: Session, spec: dict[str, Any]) -> None:
    """DuplicateServiceError when a version of that name+version is stored already."""
    found = session.scalar(
        select(ServiceVersion.id).where(ServiceVersion.name == spec["name"], ServiceVersion.version == spec["version"])
    )
    if found is not None:
        raise _duplicate(spec)


def duplicate_error(spec: dict[str, Any]) -> DuplicateServiceError:
    """The 409 of a name+version that exists already."""
    return _duplicate(spec)


def _duplicate(spec: dict[str, Any]) -> DuplicateServiceError:
    return DuplicateServiceError(
        f"service {spec['name']!r} version {spec['version']!r} already exists",
        [{"pointer": "/version", "message": "name+version must be unique"}],
    )


def add_unique(session: Session, rows: Sequence[object], spec: dict[str, Any]) -> None:
    """Insert rows in a savepoint; a name+version clash becomes a 409 and the caller's transaction survives."""
    with _unique(session, spec):
        session.add_all(rows)


@contextmanager
def _unique(session: Session, spec: dict[str, Any]) -> Iterator[None]:
    """What is added inside is flushed at the end, in a savepoint: a name+version clash becomes a 409
    (DuplicateServiceError), nothing of it is kept, and the caller's transaction survives."""
    try:
        with session.begin_nested():
            yield
            session.flush()
    except IntegrityError as exc:
        raise _duplicate(spec) from exc


def exists(session: Session, service_id: str) -> bool:
    return session.scalar(select(Service.id).where(Service.id == service_id)) is not None


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
    if filters.statuses is not None:
        query = query.where(Service.status.in_(filters.statuses))
    if filters.category:
        query = query.where(Service.category == filters.category)
    if filters.provider_id:
        query = query.where(Service.provider_id == filters.provider_id)
    return paging.page(session, query, (Service.created_at.desc(), Service.id), offset, limit)


def transition(
    session: Session,
    service_id: str,
    target: ServiceStatus,
    *,
    actor: Actor,
    reason: str,
    event_type: str | None = None,
    flow_run_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> Service:
    """A service-level move (deprecate, reinstate, retire): state, audit and event in one transaction.

    The service's current version row follows it. Pipeline moves go through `versions.transition`.
    """
    service = get(session, service_id, for_update=True)
    current = ServiceStatus(service.status)
    if current is target:
        return service  # a retried task repeating a move it already made
    if not can_transition(current, target):
        raise InvalidTransitionError(f"service {service_id} is {current.value}; it cannot become {target.value}")
    service.status = target.value
    if target is ServiceStatus.DEPRECATED and current is ServiceStatus.ACTIVE:
        service.deprecated_at = datetime.now(UTC)
    elif current is ServiceStatus.DEPRECATED and target is ServiceStatus.ACTIVE:
        service.deprecated_at = None
    current_version = session.scalars(
        select(ServiceVersion).where(ServiceVersion.service_id == service_id, ServiceVersion.version == service.version)
    ).one()
    current_version.status = target.value
    audit.append(
        session,
        service_id=service_id,
        action="status_changed",
        **actor.audit_origin(),
        from_status=current.value,
        to_status=target.value,
        reason=reason,
        flow_run_id=flow_run_id,
        details={"version": service.version, **(details or {})},
        before={"status": current.value},
        after={"status": target.value},
    )
    if event_type:
        outbox.add(session, aggregate_id=service_id, event_type=event_type, data=event_data(service, reason))
    session.flush()
    return service


def schedule_retirement(session: Session, service_id: str, sunset_at: datetime | None, flow_run_id: str | None) -> None:
    """Remember when the service retires and which scheduled run does it (None clears both)."""
    service = get(session, service_id)
    service.sunset_at = sunset_at
    service.retirement_flow_run_id = flow_run_id
    session.flush()


def archive(session: Session, service: Service, record: dict[str, Any]) -> None:
    """Keep what a retired service looked like (its spec and every version) in the archive."""
    session.add(ServiceArchive(service_id=service.id, record=record))
    service.archived_at = datetime.now(UTC)
    session.flush()


def event_data(service: Service, reason: str | None = None, **extra: Any) -> dict[str, Any]:
    """The `data` of a lifecycle event about a service (schema version in the envelope)."""
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
    data.update(extra)
    return data
