"""What the gateway reads about services: every service past the pipeline, with suspension reasons."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import AuditLog, Service

ROUTED = ("active", "deprecated", "suspended", "retired")


def routed_services(session: Session) -> Sequence[Service]:
    """Services the gateway answers for (callable, or refused with a reason of their own)."""
    return session.scalars(select(Service).where(Service.status.in_(ROUTED))).all()


@dataclass(frozen=True)
class Suspension:
    """A service's latest suspension: why, and who made it (an admin, or the health monitor)."""

    reason: str
    actor: str


def suspensions(session: Session, service_ids: Sequence[str]) -> dict[str, Suspension]:
    """Each service's latest suspension (read from the audit trail, where every one is recorded)."""
    if not service_ids:
        return {}
    stmt = (
        select(AuditLog.service_id, AuditLog.reason, AuditLog.actor)
        .where(AuditLog.service_id.in_(service_ids), AuditLog.to_status == "suspended")
        .order_by(AuditLog.id)
    )
    return {sid: Suspension(reason or "", actor) for sid, reason, actor in session.execute(stmt) if sid}


def suspension_reasons(session: Session, service_ids: Sequence[str]) -> dict[str, str]:
    """The reason of each service's latest suspension."""
    return {sid: found.reason for sid, found in suspensions(session, service_ids).items()}


def fingerprint(session: Session) -> tuple[int, datetime | None]:
    """Changes when any service is added or changes (status, deprecation, suspension)."""
    count, latest = session.execute(select(func.count(), func.max(Service.updated_at))).one()
    return int(count), latest
