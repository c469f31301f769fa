"""The append-only audit trail."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import AuditLog
from storage.repositories import paging


def append(session: Session, **fields: Any) -> AuditLog:
    """Add one audit record (`entry`'s fields); the database refuses to change it later."""
    record = entry(**fields)
    session.add(record)  # written with the caller's next flush or commit
    return record


def entry(
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
    actor_ip: str | None = None,
    user_agent: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    consumer_id: str | None = None,
) -> AuditLog:
    """One audit record, not added to any session yet.

    `actor_ip` and `user_agent` are the caller's when a request made the change (None for flows);
    `before` and `after` hold what changed (status, fields), so the record stands on its own;
    `consumer_id` names the consumer a consumption record is about (keys, access, blocking).
    """
    return AuditLog(
        service_id=service_id,
        action=action,
        actor=actor,
        actor_role=actor_role,
        from_status=from_status,
        to_status=to_status,
        reason=reason,
        flow_run_id=flow_run_id,
        details=details or {},
        actor_ip=actor_ip,
        user_agent=user_agent[:512] if user_agent else None,
        before=before,
        after=after,
        consumer_id=consumer_id,
    )


def for_service(session: Session, service_id: str, offset: int = 0, limit: int | None = None) -> Sequence[AuditLog]:
    """A service's trail (or a page of it), oldest first."""
    query = select(AuditLog).where(AuditLog.service_id == service_id).order_by(AuditLog.id)
    return session.scalars(query.offset(offset).limit(limit)).all()


def count_for_service(session: Session, service_id: str) -> int:
    """How many records a service's trail holds."""
    return session.scalar(select(func.count()).where(AuditLog.service_id == service_id)) or 0


@dataclass(frozen=True)
class AuditFilter:
    service_id: str | None = None
    consumer_id: str | None = None
    actor: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def search(session: Session, filters: AuditFilter, offset: int, limit: int) -> tuple[Sequence[AuditLog], int]:
    """A page of the trail, newest first, and how many records match."""
    query = select(AuditLog)
    if filters.service_id:
        query = query.where(AuditLog.service_id == filters.service_id)
    if filters.consumer_id:
        query = query.where(AuditLog.consumer_id == filters.consumer_id)
    if filters.actor:
        query = query.where(AuditLog.actor == filters.actor)
    if filters.action:
        query = query.where(AuditLog.action == filters.action)
    if filters.since:
        query = query.where(AuditLog.occurred_at >= filters.since)
    if filters.until:
        query = query.where(AuditLog.occurred_at < filters.until)
    return paging.page(session, query, (AuditLog.id.desc(),), offset, limit)
