"""What the gateway reads about services: every service past the pipeline, with suspension reasons."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import AuditLog, Service

ROUTED = ("active", "deprecated", "suspended", "retired")


def routed_services(session: Session) -> Sequence[Service]:
    """Services the gateway answers for (callable, or refused with a reason of their own)."""
    return session.scalars(select(Service).where(Service.status.in_(ROUTED))).all()


def suspension_reasons(session: Session, service_ids: Sequence[str]) -> dict[str, str]:
    """The reason of each service's latest suspension."""
    if not service_ids:
        return {}
    stmt = (
        select(AuditLog.service_id, AuditLog.reason)
        .where(AuditLog.service_id.in_(service_ids), AuditLog.to_status == "suspended")
        .order_by(AuditLog.id)
    )
    return {service_id: reason or "" for service_id, reason in session.execute(stmt) if service_id}


def fingerprint(session: Session) -> tuple[int, datetime | None]:
    """Changes when any service is added or changes (status, deprecation, suspension)."""
    count, latest = session.execute(select(func.count(), func.max(Service.updated_at))).one()
    return int(count), latest
