"""Version history and the status history of a service."""

from __future__ import annotations

from fastapi import APIRouter

from api import access
from api.auth import MaybePrincipal
from api.deps import DbSession, Limit, Offset
from api.routes.services import ERRORS
from api.schemas import History, HistoryEntry, VersionList, VersionOut
from storage.repositories import audit, services, versions

router = APIRouter(prefix="/services", tags=["services"])


@router.get("/{service_id}/versions", response_model=VersionList, responses=ERRORS, summary="Version history")
def list_versions(
    service_id: str, session: DbSession, principal: MaybePrincipal, offset: Offset = 0, limit: Limit = 20
) -> VersionList:
    """Every version with its own pipeline status, oldest first, a page at a time (owner, governance and admin)."""
    service = services.get(session, service_id)
    access.require_internals(principal, service_id, service.provider_id, service.status)
    items = [VersionOut.model_validate(v) for v in versions.for_service(session, service_id, offset, limit)]
    total = versions.count_for_service(session, service_id)
    return VersionList(
        items=items,
        total=total,
        offset=offset,
        limit=limit,
        service_id=service_id,
        current_version=service.version,
    )


@router.get("/{service_id}/history", response_model=History, responses=ERRORS, summary="Status history")
def history(
    service_id: str, session: DbSession, principal: MaybePrincipal, offset: Offset = 0, limit: Limit = 20
) -> History:
    """Every transition and decision with time, actor, reason and flow run id, oldest first, a page at a time."""
    service = services.get(session, service_id)
    access.require_internals(principal, service_id, service.provider_id, service.status)
    items = [HistoryEntry.model_validate(a) for a in audit.for_service(session, service_id, offset, limit)]
    total = audit.count_for_service(session, service_id)
    return History(items=items, total=total, offset=offset, limit=limit, service_id=service_id)
