"""Webhook deliveries (governance reads what was sent and how it went) and consumers' subscriptions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Response
from pydantic import Field, field_validator

from api import access
from api.auth import Principal, Role, require_roles
from api.deps import DbSession, Limit, Offset
from api.errors import ErrorResponse
from api.schemas import ApiModel, Page
from core import egress
from core.settings import get_settings
from storage.models import WebhookAttempt, WebhookDelivery
from storage.repositories import services, webhooks
from storage.repositories.webhooks import DeliveryFilter

router = APIRouter(tags=["webhooks"])
Governance = Annotated[Principal, Depends(require_roles(Role.GOVERNANCE, Role.ADMIN))]
Consumer = Annotated[Principal, Depends(require_roles(Role.CONSUMER, Role.ADMIN))]
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 403, 404, 409, 422)}
MAX_URL_LENGTH = 2048


class AttemptOut(ApiModel):
    attempt: int
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: float


class DeliveryOut(ApiModel):
    id: str = Field(description="Sent as X-Marketplace-Delivery with every attempt.")
    event_id: str
    event_type: str
    service_id: str | None
    audience: str
    url: str
    status: str = Field(description="pending, delivered or failed.")
    attempt_count: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any] = Field(description="The signed body (CloudEvents-style envelope).")
    attempts: list[AttemptOut]


class DeliveryPage(Page[DeliveryOut]):
    """A page of webhook deliveries, newest first."""


class SubscriptionIn(ApiModel):
    callback_url: str = Field(max_length=MAX_URL_LENGTH, description="http(s) URL the service's events are sent to.")

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("callbackUrl must be an absolute http or https URL")
        # Literal private/loopback addresses and localhost now; names are vetted at each delivery.
        # A body validator is not handed the app: the egress policy comes from the process settings.
        problem = egress.url_problem(value, egress.EgressPolicy.for_callbacks(get_settings()))
        if problem is not None:
            raise ValueError(f"callbackUrl {problem}; callbacks must reach a publicly routable host")
        return value


class SubscriptionOut(ApiModel):
    id: str
    service_id: str
    consumer_id: str
    callback_url: str
    created_at: datetime


class SubscriptionList(Page[SubscriptionOut]):
    """A page of a service's subscriptions, oldest first."""

    service_id: str


@router.get("/webhooks/deliveries", response_model=DeliveryPage, responses=ERRORS, summary="Webhook deliveries")
def list_deliveries(
    session: DbSession,
    _principal: Governance,
    service_id: Annotated[str | None, Query(alias="serviceId", max_length=36)] = None,
    status: Annotated[str | None, Query(pattern="^(pending|delivered|failed)$")] = None,
    audience: Annotated[str | None, Query(pattern="^(governance|consumers)$")] = None,
    offset: Offset = 0,
    limit: Limit = 20,
) -> DeliveryPage:
    """Deliveries, newest first, each with every attempt made (status code, error, duration)."""
    rows, total = webhooks.list_deliveries(session, DeliveryFilter(service_id, status, audience), offset, limit)
    attempts = webhooks.attempts_for(session, [d.id for d in rows])
    items = [_delivery_out(d, attempts[d.id]) for d in rows]
    return DeliveryPage(items=items, total=total, offset=offset, limit=limit)


def _delivery_out(delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        service_id=delivery.service_id,
        audience=delivery.audience,
        url=delivery.url,
        status=delivery.status,
        attempt_count=delivery.attempts,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        created_at=delivery.created_at,
        delivered_at=delivery.delivered_at,
        payload=delivery.payload,
        attempts=[AttemptOut.model_validate(a) for a in attempts],
    )


@router.post(
    "/services/{service_id}/subscriptions",
    status_code=201,
    response_model=SubscriptionOut,
    responses=ERRORS,
    summary="Subscribe to a service's lifecycle events",
)
def subscribe(service_id: str, body: SubscriptionIn, principal: Consumer, session: DbSession) -> SubscriptionOut:
    """Register a callback for the service's deprecation and retirement; the same URL again returns the same one."""
    service = services.get(session, service_id)
    access.require_readable(principal, service_id, service.provider_id, service.status)
    subscription = webhooks.add_subscription(session, service_id, principal.subject, body.callback_url)
    return SubscriptionOut.model_validate(subscription)


@router.get(
    "/services/{service_id}/subscriptions",
    response_model=SubscriptionList,
    responses=ERRORS,
    summary="List a service's subscriptions",
)
def list_subscriptions(
    service_id: str, principal: Consumer, session: DbSession, offset: Offset = 0, limit: Limit = 20
) -> SubscriptionList:
    """A consumer sees their own subscriptions to the service; an admin sees all of them. Oldest first."""
    services.get(session, service_id)
    owner = _owner(principal)
    rows = webhooks.subscriptions_for(session, service_id, owner, offset, limit)
    total = webhooks.count_subscriptions(session, service_id, owner)
    items = [SubscriptionOut.model_validate(s) for s in rows]
    return SubscriptionList(items=items, total=total, offset=offset, limit=limit, service_id=service_id)


@router.delete(
    "/services/{service_id}/subscriptions/{subscription_id}",
    status_code=204,
    response_class=Response,
    responses=ERRORS,
    summary="Unsubscribe",
)
def unsubscribe(service_id: str, subscription_id: str, principal: Consumer, session: DbSession) -> Response:
    """Remove a subscription (a consumer only their own: others' are 404, as in their listing)."""
    services.get(session, service_id)
    webhooks.remove_subscription(session, service_id, subscription_id, _owner(principal))
    return Response(status_code=204)


def _owner(principal: Principal) -> str | None:
    """Whose subscriptions the principal may see and remove: None means everyone's (admin)."""
    return None if principal.role is Role.ADMIN else principal.subject
