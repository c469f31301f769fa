"""`load_access`: the gateway's read of one consumer's access to one service, in two queries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from storage.encryption import SecretBox
from storage.models import AuditLog, Service, ServiceCredential, ServiceSubscription
from storage.repositories.credentials import UpstreamCredential, credential_of, live_signing_secrets
from storage.repositories.service_subscriptions import ACTIVE
from storage.repositories.service_subscriptions import subscribe as subscribe  # where the first data model had it

SUSPENDED = "suspended"


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
    suspension_reason: str | None  # why an admin suspended it (status `suspended` only)
    grant: Grant | None  # None: no active subscription
    credential: UpstreamCredential | None
    signing_secrets: tuple[str, ...]  # current first; sign with all (core/signing.py)


def load_access(session: Session, consumer_id: str, service_id: str, box: SecretBox) -> AccessRecord | None:
    """The gateway's read: the service, the consumer's active subscription and the provider's
    credential in one query, the live signing secrets in a second (and, for a suspended service
    only, the suspension's reason in a third). None: no such service."""
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
        suspension_reason=_suspension_reason(session, service_id) if status == SUSPENDED else None,
        grant=_grant(subscription) if subscription is not None else None,
        credential=credential_of(stored, box) if stored is not None else None,
        signing_secrets=tuple(live_signing_secrets(session, service_id, box, datetime.now(UTC))),
    )


def _suspension_reason(session: Session, service_id: str) -> str | None:
    """The reason recorded with the service's latest suspension (a suspended service only: rare)."""
    query = (
        select(AuditLog.reason)
        .where(AuditLog.service_id == service_id, AuditLog.to_status == SUSPENDED)
        .order_by(AuditLog.id.desc())
        .limit(1)
    )
    return session.scalar(query)


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
