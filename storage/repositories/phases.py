"""Per-phase results of publish runs, and the records a status report is made of."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from core.domain import PhaseOutcome
from core.errors import NotFoundError
from storage.database import mark_services_changed
from storage.models import FlowRunRequest, Service, ServiceVersion, ValidationResult
from storage.repositories import run_requests


def record(
    session: Session, service_id: str, flow_run_id: str | None, outcome: PhaseOutcome, started_at: datetime
) -> None:
    """Store what one phase (or check) found, with its timing."""
    session.add(
        ValidationResult(
            service_id=service_id,
            flow_run_id=flow_run_id,
            phase=outcome.phase.value,
            check_name=outcome.check,
            outcome=outcome.outcome.value,
            errors=[e.model_dump(mode="json") for e in outcome.errors],
            warnings=[w.model_dump(mode="json") for w in outcome.warnings],
            evidence=outcome.evidence,
            started_at=started_at,
            duration_ms=round(outcome.duration_ms, 3),
        )
    )
    session.flush()
    # The flush listener sees services and versions only: a new result changes the status report.
    mark_services_changed(session, [service_id])


def for_service(session: Session, service_id: str, flow_run_id: str | None = None) -> Sequence[ValidationResult]:
    """Phase results of a service in the order they were recorded, optionally of one run only."""
    query = select(ValidationResult).where(ValidationResult.service_id == service_id)
    if flow_run_id is not None:
        query = query.where(ValidationResult.flow_run_id == flow_run_id)
    return session.scalars(query.order_by(ValidationResult.id)).all()


@dataclass(frozen=True)
class Publication:
    """A service, its latest version (None only for a service without versions) and that version's results."""

    service: Service
    version: ServiceVersion | None
    results: Sequence[ValidationResult]
    queued_run: FlowRunRequest | None = None  # the version's publish run, while its start is owed


def publication(session: Session, service_id: str) -> Publication:
    """What the status endpoint reports, in two queries: the service with its latest version, then the results.

    The latest version is the most recently submitted one (as `versions.latest`); its results are
    those of its flow run. The service's spec is not loaded (the version's is).
    """
    latest = (
        select(ServiceVersion.id)
        .where(ServiceVersion.service_id == Service.id)
        .order_by(ServiceVersion.created_at.desc(), ServiceVersion.id)
        .limit(1)
        .correlate(Service)
        .scalar_subquery()
    )
    query = (
        select(Service, ServiceVersion)
        .outerjoin(ServiceVersion, ServiceVersion.id == latest)
        .where(Service.id == service_id)
        .options(defer(Service.spec))
    )
    row = session.execute(query).one_or_none()
    if row is None:
        raise NotFoundError(f"service {service_id} not found")
    service, version = row.tuple()
    if version is not None and version.flow_run_id is None:  # accepted, its run not started yet
        return Publication(service, version, [], run_requests.for_version(session, version.id))
    results = for_service(session, service_id, version.flow_run_id) if version and version.flow_run_id else []
    return Publication(service, version, results)
