"""Access requests: the approval a pending subscription waits for, decided through an approve-access run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import NotFoundError
from storage.consumption_feed import access_name, announce
from storage.models import AccessRequest, FlowRunRequest, Service, ServiceSubscription, new_id
from storage.repositories import paging
from storage.repositories.service_subscriptions import (
    ACTIVE,
    EXPIRED,
    PENDING,
    REJECTED,
    end,
    get_subscription,
    record,
    tell,
)
from storage.repositories.services import Actor

APPROVED = "approved"


def open_request(
    session: Session,
    subscription: ServiceSubscription,
    service: Service,
    reason: str,
    message: str | None,
    timeout_seconds: int,
    actor: Actor,
    request_id: str | None = None,
) -> AccessRequest:
    """The approval a pending subscription waits for (its approve-access run is attached with set_flow_run)."""
    now = datetime.now(UTC)
    request = AccessRequest(
        id=request_id or new_id(),
        subscription_id=subscription.id,
        service_id=service.id,
        provider_id=service.provider_id,
        consumer_id=subscription.consumer_id,
        reason=reason,
        message=message,
        status=PENDING,
        requested_at=now,
        expires_at=now + timedelta(seconds=timeout_seconds),
    )
    session.add(request)
    session.flush()
    data = {"accessRequestId": request.id, "reason": reason, "expiresAt": request.expires_at.isoformat()}
    record(session, subscription, "access_requested", actor, message, details=data)
    tell(session, subscription, "access_requested", reason, accessRequestId=request.id)
    return request


def get_request(session: Session, request_id: str, *, for_update: bool = False) -> AccessRequest:
    query = select(AccessRequest).where(AccessRequest.id == request_id)
    if for_update:
        query = query.with_for_update()
    request = session.scalars(query).one_or_none()
    if request is None:
        raise NotFoundError(f"access request {request_id} not found")
    return request


def request_for(session: Session, subscription_id: str) -> AccessRequest | None:
    return session.scalars(select(AccessRequest).where(AccessRequest.subscription_id == subscription_id)).one_or_none()


def run_key(request_id: str) -> str:
    """The idempotency key of the request's approve-access run (one run per request)."""
    return f"access-{request_id}"


def flow_run_of(session: Session, request: AccessRequest) -> str | None:
    """The request's approve-access run: recorded by the run itself, or by the run starter once it
    created it (None while it waits to be created)."""
    if request.flow_run_id is not None:
        return request.flow_run_id
    query = select(FlowRunRequest.flow_run_id).where(FlowRunRequest.idempotency_key == run_key(request.id))
    return session.scalars(query.limit(1)).first()


def set_flow_run(session: Session, request_id: str, flow_run_id: str) -> None:
    get_request(session, request_id, for_update=True).flow_run_id = flow_run_id
    session.flush()


@dataclass(frozen=True)
class RequestFilter:
    status: str | None = None
    provider_id: str | None = None
    service_id: str | None = None
    consumer_id: str | None = None


def list_requests(
    session: Session, filters: RequestFilter, offset: int, limit: int
) -> tuple[Sequence[AccessRequest], int]:
    """A page of access requests, oldest first (the queue reviewers work through), and the total."""
    query = select(AccessRequest)
    for column, value in (
        (AccessRequest.status, filters.status),
        (AccessRequest.provider_id, filters.provider_id),
        (AccessRequest.service_id, filters.service_id),
        (AccessRequest.consumer_id, filters.consumer_id),
    ):
        if value:
            query = query.where(column == value)
    return paging.page(session, query, (AccessRequest.requested_at, AccessRequest.id), offset, limit)


def decide(session: Session, request_id: str, approved: bool, reviewer: Actor, comment: str | None) -> AccessRequest:
    """Close a pending request with the decision and move its subscription (idempotent: a retried
    task finds it decided and changes nothing). An expired request stays expired."""
    request = get_request(session, request_id, for_update=True)
    if request.status != PENDING:
        return request
    request.status = APPROVED if approved else REJECTED
    request.decided_at, request.reviewer, request.reviewer_role = datetime.now(UTC), reviewer.id, reviewer.role
    request.comment = comment
    subscription = get_subscription(session, request.subscription_id, for_update=True)
    details = {"accessRequestId": request.id, "decision": "approve" if approved else "reject"}
    record(session, subscription, "access_decided", reviewer, comment, details=details)
    tell(session, subscription, "access_decided", comment, decision=details["decision"], reviewer=reviewer.id)
    if subscription.status != PENDING:
        return request  # cancelled by the consumer meanwhile: the decision is kept, nothing opens
    if approved:
        subscription.status, subscription.activated_at = ACTIVE, datetime.now(UTC)
        record(session, subscription, "subscription_activated", reviewer, comment, after={"status": ACTIVE})
        tell(session, subscription, "subscription_activated", comment)
        announce(session, access_name(subscription.consumer_id, subscription.service_id))
    else:
        end(session, subscription, REJECTED, comment, reviewer)
    return request


def withdraw(session: Session, request: AccessRequest, status: str, reason: str, actor: Actor) -> None:
    """Close a pending request without a decision (expired, or cancelled with its subscription)."""
    if request.status != PENDING:
        return
    request.status, request.decided_at, request.comment = status, datetime.now(UTC), reason
    subscription = get_subscription(session, request.subscription_id, for_update=True)
    details = {"accessRequestId": request.id}
    record(session, subscription, f"access_{status}", actor, reason, details=details)
    if status == EXPIRED:
        tell(session, subscription, "access_expired", reason, accessRequestId=request.id)
        if subscription.status == PENDING:
            end(session, subscription, EXPIRED, reason, actor)


def overdue(session: Session, now: datetime, limit: int = 500) -> Sequence[AccessRequest]:
    """Pending requests whose time is up."""
    query = select(AccessRequest).where(AccessRequest.status == PENDING, AccessRequest.expires_at <= now)
    return session.scalars(query.order_by(AccessRequest.expires_at).limit(limit)).all()
