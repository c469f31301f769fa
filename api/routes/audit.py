"""The audit trail, for administrators."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.auth import Principal, Role, require_roles
from api.deps import DbSession, Offset
from api.routes.approvals import AUTH_ERRORS
from api.schemas import AuditEntry, AuditPage
from storage.repositories import audit
from storage.repositories.audit import AuditFilter

router = APIRouter(prefix="/audit", tags=["audit"])
Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]


@router.get("", response_model=AuditPage, responses=AUTH_ERRORS, summary="Audit trail")
def read_audit(
    session: DbSession,
    _admin: Admin,
    service_id: Annotated[str | None, Query(alias="serviceId", max_length=36)] = None,
    consumer_id: Annotated[str | None, Query(alias="consumerId", max_length=128)] = None,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> AuditPage:
    """Every recorded transition and decision, newest first, filtered by service, consumer, actor, action and time."""
    filters = AuditFilter(
        service_id=service_id, consumer_id=consumer_id, actor=actor, action=action, since=since, until=until
    )
    rows, total = audit.search(session, filters, offset, limit)
    return AuditPage(items=[AuditEntry.model_validate(r) for r in rows], total=total, offset=offset, limit=limit)
