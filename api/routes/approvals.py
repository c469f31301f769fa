"""Governance: the queue of publications waiting for a decision, and the decision itself."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from api import access, publishing
from api.auth import Principal, Role, require_roles
from api.deps import DbSession, Limit, Offset, OrchestratorDep
from api.routes.services import ERRORS
from api.schemas import ApprovalPage, DecisionAccepted, DecisionIn
from api.status.record import approval_view
from storage.repositories import approvals

router = APIRouter(prefix="/approvals", tags=["approvals"])
Governance = Annotated[Principal, Depends(require_roles(Role.GOVERNANCE, Role.ADMIN))]
AUTH_ERRORS = {**ERRORS, 401: ERRORS[404], 403: ERRORS[404]}


@router.get("", response_model=ApprovalPage, responses=AUTH_ERRORS, summary="Approval queue")
def list_approvals(
    session: DbSession,
    orch: OrchestratorDep,
    _principal: Governance,
    status: Annotated[str | None, Query(pattern="^(pending|approved|rejected|expired)$")] = "pending",
    offset: Offset = 0,
    limit: Limit = 20,
) -> ApprovalPage:
    """Publications by approval status (pending by default), oldest request first, with their validation
    and policy results."""
    rows = approvals.by_status(session, status, offset, limit)
    items = [approval_view(session, a, orch) for a in rows]
    total = approvals.count_by_status(session, status)
    return ApprovalPage(items=items, total=total, offset=offset, limit=limit)


@router.post(
    "/{service_id}",
    status_code=202,
    response_model=DecisionAccepted,
    responses=AUTH_ERRORS,
    summary="Approve or reject a waiting publication",
)
def decide(
    service_id: str, body: DecisionIn, request: Request, principal: Governance, orch: OrchestratorDep
) -> DecisionAccepted:
    """Resume the suspended publish run with the decision; 409 when the service waits for none, 404 when
    there is no such service."""
    reviewer = access.actor_for(principal, request)
    version, flow_run_id = publishing.decide_approval(service_id, body.decision, body.comment, reviewer, orch)
    return DecisionAccepted(
        service_id=service_id,
        version=version,
        flow_run_id=flow_run_id,
        decision=body.decision,
        reviewer=principal.subject,
    )
