"""Per-phase results of publish runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.domain import PhaseOutcome
from storage.models import ValidationResult


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


def for_service(session: Session, service_id: str, flow_run_id: str | None = None) -> Sequence[ValidationResult]:
    """Phase results of a service in the order they were recorded, optionally of one run only."""
    query = select(ValidationResult).where(ValidationResult.service_id == service_id)
    if flow_run_id is not None:
        query = query.where(ValidationResult.flow_run_id == flow_run_id)
    return session.scalars(query.order_by(ValidationResult.id)).all()
