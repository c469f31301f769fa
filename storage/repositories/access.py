"""Access to services: subscriptions under plans, the approvals some of them wait for, and
`load_access`, the gateway's read of one consumer's access to one service.

Every change to what a gateway holds for a consumer and service is announced
(storage/consumption_feed.py) in its transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import ConflictError, NotFoundError
from core.plans import Plan
from storage.consumption_feed import access_name, announce
from storage.encryption import SecretBox
from storage.models import AccessRequest, Service, ServiceCredential, ServiceSubscription
from storage.repositories import audit, outbox
from storage.repositories.credentials import UpstreamCredential, credential_of, live_signing_secrets
from storage.repositories.services import Actor

PENDING, ACTIVE, REJECTED, EXPIRED, CANCELLED = "pending", "active", "rejected", "expired", "cancelled"
APPROVED = "approved"
OPEN = (PENDING, ACTIVE)


def subscribe(
    session: Session,
    consumer_id: str,
    service: Service,
    plan: Plan,
    currency: str | None,
    actor: Actor,
    *,
    pending: bool,
) -> ServiceSubscription:
    """Open a subscription (`pending` when it waits for approval, else `active`); 409 when one is open."""
    now = datetime.now(UTC)
    subscription = ServiceSubscription(
        consumer_id=consumer_id,
        service_id=service.id,
        status=PENDING if pending else ACTIVE,
        created_by=actor.id,
        activated_at=None if pending else now,
        currency=currency,
        **_plan_columns(plan),
    )
    try:
        with session.begin_nested():
            session.add(subscription)
    except IntegrityError as exc:
        raise ConflictError(f"consumer {consumer_id} already has an open subscription to {service.id}") from exc
    action = "subscription_requested" if pending else "subscription_activated"
    _audit(session, subscription, action, actor, None, after={"status": subscription.status, "plan": plan.name})
    if not pending:
        _event(session, subscription, "subscription_activated", None)
        announce(session, access_name(consumer_id, service.id))
    return subscription


def _plan_columns(plan: Plan) -> dict[str, Any]:
    return {
        "plan_name": plan.name,
        "plan": plan.model_dump(mode="json", by_alias=True),
        "requests_per_minute": plan.requests_per_minute,
        "key_requests_per_minute": plan.key_requests_per_minute,
        "requests_per_month": plan.requests_per_month,
        "tokens_per_month": plan.tokens_per_month,
        "max_tokens_per_request": plan.max_tokens_per_request,
        "price_per_month": plan.price_per_month,
    }


def open_request(
    session: Session,
    subscription: ServiceSubscription,
    service: Service,
    reason: str,
    message: str | None,
    timeout_seconds: int,
    actor: Actor,
) -> AccessRequest:
    """The approval a pending subscription waits for (the approve-access run is attached later)."""
    now = datetime.now(UTC)
    request = AccessRequest(
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
    _audit(session, subscription, "access_requested", actor, message, details=data)
    _event(session, subscription, "access_requested", reason, accessRequestId=request.id)
    return request


def get_subscription(session: Session, subscription_id: str, *, for_update: bool = False) -> ServiceSubscription:
    query = select(ServiceSubscription).where(ServiceSubscription.id == subscription_id)
    if for_update:
        query = query.with_for_update()
    subscription = session.scalars(query).one_or_none()
    if subscription is None:
        raise NotFoundError(f"subscription {subscription_id} not found")
    return subscription


def open_subscription(session: Session, consumer_id: str, service_id: str) -> ServiceSubscription | None:
    """The consumer's pending or active subscription to the service, if any."""
    query = select(ServiceSubscription).where(
        ServiceSubscription.consumer_id == consumer_id,
        ServiceSubscription.service_id == service_id,
        ServiceSubscription.status.in_(OPEN),
    )
    return session.scalars(query).one_or_none()


@dataclass(frozen=True)
class SubscriptionFilter:
    consumer_id: str | None = None
    service_id: str | None = None
    provider_id: str | None = None
    status: str | None = None


def list_subscriptions(
    session: Session, filters: SubscriptionFilter, offset: int, limit: int
) -> tuple[Sequence[tuple[ServiceSubscription, Service]], int]:
    """A page of subscriptions with their services, newest first, and how many match."""
    query = select(ServiceSubscription, Service).join(Service, Service.id == ServiceSubscription.service_id)
    if filters.consumer_id:
        query = query.where(ServiceSubscription.consumer_id == filters.consumer_id)
    if filters.service_id:
        query = query.where(ServiceSubscription.service_id == filters.service_id)
    if filters.provider_id:
        query = query.where(Service.provider_id == filters.provider_id)
    if filters.status:
        query = query.where(ServiceSubscription.status == filters.status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    order = (ServiceSubscription.created_at.desc(), ServiceSubscription.id)
    rows = session.execute(query.order_by(*order).offset(offset).limit(limit)).tuples().all()
    return rows, total


def end(session: Session, subscription: ServiceSubscription, status: str, reason: str | None, actor: Actor) -> None:
    """Close an open subscription: cancelled, rejected or expired (announced when it was active)."""
    if subscription.status not in OPEN:
        raise ConflictError(f"subscription {subscription.id} is already {subscription.status}")
    before = subscription.status
    subscription.status, subscription.ended_at = status, datetime.now(UTC)
    subscription.ended_by, subscription.ended_reason = actor.id, reason
    action = "subscription_cancelled" if status == CANCELLED else f"subscription_{status}"
    _audit(session, subscription, action, actor, reason, before={"status": before}, after={"status": status})
    if status == CANCELLED:
        _event(session, subscription, "subscription_cancelled", reason)
    if before == ACTIVE:
        announce(session, access_name(subscription.consumer_id, subscription.service_id))


def change_plan(session: Session, subscription: ServiceSubscription, plan: Plan, actor: Actor) -> None:
    """Move an open subscription to another plan of the service (limits change at every gateway)."""
    before = {"plan": subscription.plan_name}
    for column, value in _plan_columns(plan).items():
        setattr(subscription, column, value)
    _audit(session, subscription, "subscription_plan_changed", actor, None, before=before, after={"plan": plan.name})
    if subscription.status == ACTIVE:
        announce(session, access_name(subscription.consumer_id, subscription.service_id))


# --- Access requests ---------------------------------------------------------------------------


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
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = session.scalars(query.order_by(AccessRequest.requested_at, AccessRequest.id).offset(offset).limit(limit))
    return page.all(), total


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
    _audit(session, subscription, "access_decided", reviewer, comment, details=details)
    _event(session, subscription, "access_decided", comment, decision=details["decision"], reviewer=reviewer.id)
    if subscription.status != PENDING:
        return request  # cancelled by the consumer meanwhile: the decision is kept, nothing opens
    if approved:
        subscription.status, subscription.activated_at = ACTIVE, datetime.now(UTC)
        _audit(session, subscription, "subscription_activated", reviewer, comment, after={"status": ACTIVE})
        _event(session, subscription, "subscription_activated", comment)
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
    _audit(session, subscription, f"access_{status}", actor, reason, details=details)
    if status == EXPIRED:
        _event(session, subscription, "access_expired", reason, accessRequestId=request.id)
        if subscription.status == PENDING:
            end(session, subscription, EXPIRED, reason, actor)


def overdue(session: Session, now: datetime, limit: int = 500) -> Sequence[AccessRequest]:
    """Pending requests whose time is up."""
    query = select(AccessRequest).where(AccessRequest.status == PENDING, AccessRequest.expires_at <= now)
    return session.scalars(query.order_by(AccessRequest.expires_at).limit(limit)).all()


# --- The gateway's read ------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """An active subscription's limits, as the gateway enforces them."""

    subscription_id: str
    plan_name: str
    requests_per_minute: int
    key_requests_per_minute: int | None
    requests_per_month: int | None
    tokens_per_month: int | None
    max_tokens_per_request: int | None


@dataclass(frozen=True)
class AccessRecord:
    """What a gateway keeps in memory for one consumer and one service (see load_access)."""

    service_id: str
    service_name: str
    service_version: str
    service_status: str
    provider_id: str
    endpoint: dict[str, Any]
    pricing: dict[str, Any]
    deprecated_at: datetime | None
    sunset_at: datetime | None
    grant: Grant | None  # None: no active subscription
    credential: UpstreamCredential | None
    signing_secrets: tuple[str, ...]  # current first; sign with all (core/signing.py)


def load_access(session: Session, consumer_id: str, service_id: str, box: SecretBox) -> AccessRecord | None:
    """The gateway's read: the service, the consumer's active subscription and the provider's
    credential in one query, the live signing secrets in a second. None: no such service."""
    subscription_match = and_(
        ServiceSubscription.service_id == Service.id,
        ServiceSubscription.consumer_id == consumer_id,
        ServiceSubscription.status == ACTIVE,
    )
    query = (
        select(
            Service.id,
            Service.name,
            Service.version,
            Service.status,
            Service.provider_id,
            Service.spec["endpoint"],
            Service.spec["pricing"],
            Service.deprecated_at,
            Service.sunset_at,
            ServiceSubscription,
            ServiceCredential,
        )
        .outerjoin(ServiceSubscription, subscription_match)
        .outerjoin(ServiceCredential, ServiceCredential.service_id == Service.id)
        .where(Service.id == service_id)
    )
    row = session.execute(query).one_or_none()
    if row is None:
        return None
    sid, name, version, status, provider_id, endpoint, pricing, deprecated_at, sunset_at, subscription, stored = row
    return AccessRecord(
        service_id=sid,
        service_name=name,
        service_version=version,
        service_status=status,
        provider_id=provider_id,
        endpoint=endpoint or {},
        pricing=pricing or {},
        deprecated_at=deprecated_at,
        sunset_at=sunset_at,
        grant=_grant(subscription) if subscription is not None else None,
        credential=credential_of(stored, box) if stored is not None else None,
        signing_secrets=tuple(live_signing_secrets(session, service_id, box, datetime.now(UTC))),
    )


def _grant(subscription: ServiceSubscription) -> Grant:
    return Grant(
        subscription_id=subscription.id,
        plan_name=subscription.plan_name,
        requests_per_minute=subscription.requests_per_minute,
        key_requests_per_minute=subscription.key_requests_per_minute,
        requests_per_month=subscription.requests_per_month,
        tokens_per_month=subscription.tokens_per_month,
        max_tokens_per_request=subscription.max_tokens_per_request,
    )


def _audit(
    session: Session,
    subscription: ServiceSubscription,
    action: str,
    actor: Actor,
    reason: str | None,
    *,
    details: dict[str, Any] | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    session.flush()
    audit.append(
        session,
        service_id=subscription.service_id,
        consumer_id=subscription.consumer_id,
        action=action,
        **actor.audit_origin(),
        reason=reason,
        details={"subscriptionId": subscription.id, **(details or {})},
        before=before,
        after=after,
    )


def _event(
    session: Session, subscription: ServiceSubscription, event_type: str, reason: str | None, **extra: Any
) -> None:
    data = {
        "serviceId": subscription.service_id,
        "consumerId": subscription.consumer_id,
        "subscriptionId": subscription.id,
        "plan": subscription.plan_name,
        "status": subscription.status,
        **({"reason": reason} if reason else {}),
        **extra,
    }
    outbox.add(session, aggregate_id=subscription.service_id, event_type=event_type, data=data)
