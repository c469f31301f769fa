"""Version history and the status history of a service."""

from __future__ import annotations

from fastapi import APIRouter

from api import access
from api.auth import MaybePrincipal
from api.deps import DbSession
from api.routes.services import ERRORS
from api.schemas import History, HistoryEntry, VersionList, VersionOut
from storage.repositories import audit, services, versions

router = APIRouter(prefix="/services", tags=["services"])


@router.get("/{service_id}/versions", response_model=VersionList, responses=ERRORS, summary="Version history")
def list_versions(service_id: str, session: DbSession, principal: MaybePrincipal) -> VersionList:
    """Every version with its own pipeline status, oldest first (owner, governance and admin)."""
    service = services.get(session, service_id)
    access.require_internals(principal, service_id, service.provider_id, service.status)
    items = [VersionOut.model_validate(v) for v in versions.for_service(session, service_id)]
    return VersionList(service_id=service_id, current_version=service.version, items=items)


@router.get("/{service_id}/history", response_model=History, responses=ERRORS, summary="Status history")
def history(service_id: str, session: DbSession, principal: MaybePrincipal) -> History:
    """Every transition and decision with time, actor, reason and flow run id, oldest first."""
    service = services.get(session, service_id)
    access.require_internals(principal, service_id, service.provider_id, service.status)
    return History(
        service_id=service_id,
        items=[HistoryEntry.model_validate(a) for a in audit.for_service(session, service_id)],
    )
