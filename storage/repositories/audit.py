"""The append-only audit trail."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import AuditLog


def append(
    session: Session,
    *,
    service_id: str | None,
    action: str,
    actor: str,
    actor_role: str | None = None,
    from_status: str | None = None,
    to_status: str | None = None,
    reason: str | None = None,
    flow_run_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditLog:
    """Add one audit record; the database refuses to change it later."""
    entry = AuditLog(
        service_id=service_id,
        action=action,
        actor=actor,
        actor_role=actor_role,
        from_status=from_status,
        to_status=to_status,
        reason=reason,
        flow_run_id=flow_run_id,
        details=details or {},
    )
    session.add(entry)
    session.flush()
    return entry


def for_service(session: Session, service_id: str) -> Sequence[AuditLog]:
    """A service's trail, oldest first."""
    query = select(AuditLog).where(AuditLog.service_id == service_id).order_by(AuditLog.id)
    return session.scalars(query).all()
