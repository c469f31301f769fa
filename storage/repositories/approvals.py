"""Approval requests and governance decisions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.errors import ConflictError, NotFoundError
from storage.models import Approval, Service


def request(session: Session, service_id: str, version_id: str, flow_run_id: str, timeout_seconds: int) -> Approval:
    """Open the approval a version waits for (once: a retried task finds the one it made)."""
    existing = session.scalars(select(Approval).where(Approval.version_id == version_id)).one_or_none()
    if existing is not None:
        return existing
    now = datetime.now(UTC)
    approval = Approval(
        service_id=service_id,
        version_id=version_id,
        flow_run_id=flow_run_id,
        status="pending",
        requested_at=now,
        expires_at=now + timedelta(seconds=timeout_seconds),
    )
    session.add(approval)
    session.flush()
    return approval


def pending_for_service(session: Session, service_id: str, *, for_update: bool = False) -> Approval:
    """The approval a service waits for; ConflictError when it waits for none, NotFoundError when there
    is no such service."""
    query = select(Approval).where(Approval.service_id == service_id, Approval.status == "pending")
    if for_update:
        query = query.with_for_update()
    approval = session.scalars(query).first()
    if approval is None:
        if session.scalars(select(Approval.id).where(Approval.service_id == service_id)).first() is None:
            if session.scalar(select(Service.id).where(Service.id == service_id)) is None:
                raise NotFoundError(f"service {service_id} not found")
            raise ConflictError(f"service {service_id} is not waiting for approval")
        raise ConflictError(f"service {service_id} has no pending approval: it was already decided or expired")
    return approval


def by_status(session: Session, status: str | None, offset: int, limit: int) -> Sequence[Approval]:
    """Approvals, oldest request first (the queue governance works through)."""
    query = select(Approval)
    if status:
        query = query.where(Approval.status == status)
    return session.scalars(query.order_by(Approval.requested_at, Approval.id).offset(offset).limit(limit)).all()


def count_by_status(session: Session, status: str | None) -> int:
    """How many approvals `by_status` pages through."""
    query = select(func.count()).select_from(Approval)
    if status:
        query = query.where(Approval.status == status)
    return session.scalar(query) or 0


def close(session: Session, version_id: str, status: str, reviewer: str | None, comment: str | None) -> Approval:
    """Record the outcome: approved, rejected or expired (idempotent for the same outcome)."""
    approval = session.scalars(
        select(Approval).where(Approval.version_id == version_id).with_for_update()
    ).one_or_none()
    if approval is None:
        raise NotFoundError(f"no approval for version {version_id}")
    if approval.status == "pending":
        approval.status = status
        approval.decided_at = datetime.now(UTC)
        approval.reviewer = reviewer
        approval.comment = comment
        session.flush()
    return approval
