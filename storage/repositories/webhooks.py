"""Webhook deliveries with their attempts, and consumers' subscriptions to a service."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import ConflictError, NotFoundError
from storage.models import Subscription, WebhookAttempt, WebhookDelivery
from storage.repositories import paging

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass(frozen=True)
class DeliveryFilter:
    service_id: str | None = None
    status: str | None = None
    audience: str | None = None


@dataclass(frozen=True)
class NewEvent:
    """One event to be sent to several URLs."""

    event_id: str
    event_type: str
    service_id: str | None
    audience: str
    payload: dict[str, Any]


def create_deliveries(session: Session, event: NewEvent, urls: Sequence[str]) -> list[WebhookDelivery]:
    """One delivery per URL for the event, reusing those that exist (event_id+url is unique)."""
    deliveries = []
    for url in dict.fromkeys(urls):  # the same URL configured twice is still one delivery
        existing = _by_event_url(session, event.event_id, url)
        if existing is None:
            existing = _insert_delivery(session, event, url)
        deliveries.append(existing)
    return deliveries


def _by_event_url(session: Session, event_id: str, url: str) -> WebhookDelivery | None:
    query = select(WebhookDelivery).where(WebhookDelivery.event_id == event_id, WebhookDelivery.url == url)
    return session.scalars(query).one_or_none()


def _insert_delivery(session: Session, event: NewEvent, url: str) -> WebhookDelivery:
    delivery = WebhookDelivery(
        event_id=event.event_id,
        event_type=event.event_type,
        service_id=event.service_id,
        audience=event.audience,
        url=url,
        payload=event.payload,
        status=PENDING,
        attempts=0,
    )
    try:
        # A savepoint: a concurrent run of the same task may have inserted it since we looked.
        with session.begin_nested():
            session.add(delivery)
            session.flush()
    except IntegrityError:
        existing = _by_event_url(session, event.event_id, url)
        if existing is None:
            raise
        return existing
    return delivery


def for_event(session: Session, event_id: str, *, status: str | None = None) -> Sequence[WebhookDelivery]:
    """The deliveries of one event (optionally only those in `status`), oldest first."""
    query = select(WebhookDelivery).where(WebhookDelivery.event_id == event_id)
    if status:
        query = query.where(WebhookDelivery.status == status)
    return session.scalars(query.order_by(WebhookDelivery.created_at, WebhookDelivery.id)).all()


def get_delivery(session: Session, delivery_id: str, *, for_update: bool = False) -> WebhookDelivery:
    query = select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
    if for_update:
        query = query.with_for_update()
    delivery = session.scalars(query).one_or_none()
    if delivery is None:
        raise NotFoundError(f"webhook delivery {delivery_id} not found")
    return delivery


def record_attempt(
    session: Session, delivery_id: str, *, status_code: int | None, error: str | None, duration_ms: float
) -> tuple[WebhookDelivery, WebhookAttempt]:
    """Count one attempt and keep its outcome; the row lock numbers concurrent attempts distinctly."""
    delivery = get_delivery(session, delivery_id, for_update=True)
    delivery.attempts += 1
    delivery.last_status_code = status_code
    delivery.last_error = error
    attempt = WebhookAttempt(
        delivery_id=delivery_id,
        attempt=delivery.attempts,
        status_code=status_code,
        error=error,
        duration_ms=duration_ms,
    )
    session.add(attempt)
    session.flush()
    return delivery, attempt


def mark_delivered(session: Session, delivery: WebhookDelivery) -> None:
    delivery.status = DELIVERED
    delivery.delivered_at = datetime.now(UTC)
    session.flush()


def mark_failed(session: Session, delivery_ids: Sequence[str]) -> int:
    """Give up on the deliveries still pending among `delivery_ids`; returns how many."""
    if not delivery_ids:
        return 0
    query = select(WebhookDelivery).where(WebhookDelivery.id.in_(delivery_ids), WebhookDelivery.status == PENDING)
    rows = session.scalars(query.with_for_update()).all()
    for delivery in rows:
        delivery.status = FAILED
    session.flush()
    return len(rows)


def list_deliveries(
    session: Session, filters: DeliveryFilter, offset: int, limit: int
) -> tuple[Sequence[WebhookDelivery], int]:
    """A page of deliveries, newest first, and the total matching the filters."""
    query = select(WebhookDelivery)
    if filters.service_id:
        query = query.where(WebhookDelivery.service_id == filters.service_id)
    if filters.status:
        query = query.where(WebhookDelivery.status == filters.status)
    if filters.audience:
        query = query.where(WebhookDelivery.audience == filters.audience)
    return paging.page(session, query, (WebhookDelivery.created_at.desc(), WebhookDelivery.id), offset, limit)


def attempts_for(session: Session, delivery_ids: Sequence[str]) -> dict[str, list[WebhookAttempt]]:
    """The attempts of each delivery, in order (one query for a whole page)."""
    found: dict[str, list[WebhookAttempt]] = {delivery_id: [] for delivery_id in delivery_ids}
    if delivery_ids:
        query = select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(delivery_ids))
        for attempt in session.scalars(query.order_by(WebhookAttempt.delivery_id, WebhookAttempt.attempt)):
            found[attempt.delivery_id].append(attempt)
    return found


def add_subscription(session: Session, service_id: str, consumer_id: str, callback_url: str) -> Subscription:
    """Subscribe a consumer's callback to a service; the same URL again returns the existing subscription.

    Raises ConflictError when another consumer has already registered that URL for the service.
    """
    existing = _subscription_by_url(session, service_id, callback_url)
    if existing is None:
        subscription = Subscription(service_id=service_id, consumer_id=consumer_id, callback_url=callback_url)
        try:
            with session.begin_nested():
                session.add(subscription)
                session.flush()
            return subscription
        except IntegrityError:
            existing = _subscription_by_url(session, service_id, callback_url)
            if existing is None:
                raise
    if existing.consumer_id != consumer_id:
        raise ConflictError(
            "this callback URL is already subscribed to the service by another consumer",
            [{"pointer": "/callbackUrl", "message": "callback URL already registered for this service"}],
        )
    return existing


def _subscription_by_url(session: Session, service_id: str, callback_url: str) -> Subscription | None:
    query = select(Subscription).where(Subscription.service_id == service_id, Subscription.callback_url == callback_url)
    return session.scalars(query).one_or_none()


def subscriptions_for(
    session: Session, service_id: str, consumer_id: str | None = None, offset: int = 0, limit: int | None = None
) -> Sequence[Subscription]:
    """A service's subscriptions (only one consumer's when `consumer_id` is given), oldest first."""
    query = _subscriptions(select(Subscription), service_id, consumer_id)
    return session.scalars(query.order_by(Subscription.created_at, Subscription.id).offset(offset).limit(limit)).all()


def count_subscriptions(session: Session, service_id: str, consumer_id: str | None = None) -> int:
    """How many subscriptions `subscriptions_for` pages through."""
    return session.scalar(_subscriptions(select(func.count()), service_id, consumer_id)) or 0


def _subscriptions(query: Select[Any], service_id: str, consumer_id: str | None) -> Select[Any]:
    query = query.where(Subscription.service_id == service_id)
    return query if consumer_id is None else query.where(Subscription.consumer_id == consumer_id)


def remove_subscription(
    session: Session, service_id: str, subscription_id: str, consumer_id: str | None = None
) -> None:
    """Delete a subscription; NotFoundError when it is not the service's (or, given `consumer_id`, not theirs)."""
    query = select(Subscription).where(Subscription.id == subscription_id, Subscription.service_id == service_id)
    subscription = session.scalars(query).one_or_none()
    if subscription is None or (consumer_id is not None and subscription.consumer_id != consumer_id):
        raise NotFoundError(f"subscription {subscription_id} of service {service_id} not found")
    session.delete(subscription)
    session.flush()
