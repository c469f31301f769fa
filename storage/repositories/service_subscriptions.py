"""Subscriptions: a consumer's access to a service under a plan (see access_requests for approvals).

Every change to what a gateway holds for a consumer and service is announced
(storage/consumption_feed.py) in its transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import ConflictError, NotFoundError
from core.plans import Plan
from storage.consumption_feed import access_name, announce
from storage.models import Service, ServiceSubscription
from storage.repositories import audit, outbox, paging
from storage.repositories.services import Actor

PENDING, ACTIVE, REJECTED, EXPIRED, CANCELLED = "pending", "active", "rejected", "expired", "cancelled"
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
    record(session, subscription, action, actor, None, after={"status": subscription.status, "plan": plan.name})
    if not pending:
        tell(session, subscription, "subscription_activated", None)
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


def was_subscribed(session: Session, consumer_id: str, service_id: str) -> bool:
    """Whether the consumer ever had access to the service (a deprecated service keeps its subscribers)."""
    query = select(ServiceSubscription.id).where(
        ServiceSubscription.consumer_id == consumer_id,
        ServiceSubscription.service_id == service_id,
        ServiceSubscription.activated_at.is_not(None),
    )
    return session.scalars(query.limit(1)).first() is not None


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
    total = paging.count(session, query)
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
    record(session, subscription, action, actor, reason, before={"status": before}, after={"status": status})
    if status == CANCELLED:
        tell(session, subscription, "subscription_cancelled", reason)
    if before == ACTIVE:
        announce(session, access_name(subscription.consumer_id, subscription.service_id))


def change_plan(session: Session, subscription: ServiceSubscription, plan: Plan, actor: Actor) -> None:
    """Move an open subscription to another plan of the service (limits change at every gateway)."""
    before = {"plan": subscription.plan_name}
    for column, value in _plan_columns(plan).items():
        setattr(subscription, column, value)
    record(session, subscription, "subscription_plan_changed", actor, None, before=before, after={"plan": plan.name})
    if subscription.status == ACTIVE:
        announce(session, access_name(subscription.consumer_id, subscription.service_id))


def record(
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


def tell(
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
