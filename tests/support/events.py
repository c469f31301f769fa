"""Outbox events written the way the platform writes them: through the repositories, in lifecycle order."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from core.domain import ServiceStatus
from core.plans import Plan
from storage.database import session_scope
from storage.repositories import (
    access_requests,
    api_keys,
    consumers,
    outbox,
    service_subscriptions,
    services,
    statements,
    versions,
)
from storage.repositories.api_keys import KeySpec
from storage.repositories.services import SYSTEM, Actor, event_data
from tests.support.billing import store_rows, usage_row
from tests.support.specs import make_spec

PROVIDER = Actor("acme", "provider")
GOVERNANCE = Actor("gov-1", "governance")


def _move_version(version: str, target: ServiceStatus, event_type: str | None = None) -> Callable[[Session, str], None]:
    def step(session: Session, service_id: str) -> None:
        row = next(v for v in versions.for_service(session, service_id) if v.version == version)
        reason = f"to {target.value}"
        versions.transition(session, row.id, target, actor=SYSTEM, reason=reason, event_type=event_type)

    return step


def _move_service(target: ServiceStatus, event_type: str) -> Callable[[Session, str], None]:
    def step(session: Session, service_id: str) -> None:
        reason = f"to {target.value}"
        services.transition(session, service_id, target, actor=GOVERNANCE, reason=reason, event_type=event_type)

    return step


def _decide(session: Session, service_id: str) -> None:
    service = services.get(session, service_id)
    data = event_data(service, "meets the bar", decision="approve", reviewer=GOVERNANCE.id)
    outbox.add(session, aggregate_id=service_id, event_type="approval_decided", data=data)


def _next_version(session: Session, service_id: str) -> None:
    service = services.get(session, service_id)
    versions.create_next(session, service, make_spec(name=service.name, version="1.1.0"), PROVIDER)


def _rollback(session: Session, service_id: str) -> None:
    data = {"serviceId": service_id, "steps": ["registry", "search"], "problems": []}
    outbox.add(session, aggregate_id=service_id, event_type="rollback_completed", data=data)


def _consumer_of(service_id: str) -> str:
    return f"c-{service_id[:8]}"


def _access(session: Session, service_id: str) -> None:
    """A consumer asks for access (access_requested), is approved (access_decided, subscription_activated),
    cancels (subscription_cancelled), asks again and the request lapses (access_expired)."""
    consumer = consumers.ensure(session, _consumer_of(service_id), PROVIDER).id
    service, plan = services.get(session, service_id), Plan(name="basic", requests_per_minute=10)
    first = service_subscriptions.subscribe(session, consumer, service, plan, None, PROVIDER, pending=True)
    request = access_requests.open_request(session, first, service, "restricted", None, 60, PROVIDER)
    access_requests.decide(session, request.id, True, GOVERNANCE, "fine")
    service_subscriptions.end(session, first, service_subscriptions.CANCELLED, "done", PROVIDER)
    second = service_subscriptions.subscribe(session, consumer, service, plan, None, PROVIDER, pending=True)
    lapsing = access_requests.open_request(session, second, service, "restricted", None, 60, PROVIDER)
    access_requests.withdraw(session, lapsing, service_subscriptions.EXPIRED, "no decision", SYSTEM)


def _consumer_events(session: Session, service_id: str) -> None:
    consumer = _consumer_of(service_id)
    key, _ = api_keys.create(session, consumer, KeySpec("k"), "p" * 32, PROVIDER)
    api_keys.revoke(session, consumer, key.id, "leaked", GOVERNANCE)
    consumers.block(session, consumer, "fraud", GOVERNANCE)
    consumers.unblock(session, consumer, "cleared", GOVERNANCE)


def _billing(session: Session, service_id: str) -> None:
    """Usage under a one-request quota (quota_threshold_reached at 80 and 100), the month's statements
    (statement_issued; the provider's once, with the first service) and a correction (statement_adjusted)."""
    consumer, service = _consumer_of(service_id), services.get(session, service_id)
    plan = Plan(name="metered", requests_per_minute=10, requests_per_month=1)
    subscription = service_subscriptions.subscribe(session, consumer, service, plan, None, PROVIDER, pending=False)
    now = datetime.now(UTC)
    store_rows(session, [usage_row(consumer, service_id, now, "0.25", subscription_id=subscription.id)], now=now)
    period = statements.period_of(now)
    for party in (statements.Party("consumer", consumer), statements.Party("provider", service.provider_id)):
        statements.issue(session, party, period, Decimal(10))
    issued = statements.find(session, statements.Party("consumer", consumer), period, "USD")
    assert issued is not None
    statements.adjust(session, issued.id, Decimal("-0.05"), "goodwill", GOVERNANCE)


# Every event type of the schema, in an order the lifecycle allows (moves without an event in between).
LIFECYCLE: list[Callable[[Session, str], None]] = [
    _move_version("1.0.0", ServiceStatus.VALIDATING),
    _move_version("1.0.0", ServiceStatus.TESTING),
    _move_version("1.0.0", ServiceStatus.PENDING_APPROVAL, "approval_requested"),
    _decide,
    _move_version("1.0.0", ServiceStatus.ACTIVE, "service_published"),
    _access,
    _billing,
    _consumer_events,
    _next_version,
    _move_version("1.1.0", ServiceStatus.VALIDATING),
    _move_version("1.1.0", ServiceStatus.FAILED, "validation_failed"),
    _rollback,
    _move_service(ServiceStatus.DEPRECATED, "service_deprecated"),
    _move_service(ServiceStatus.ACTIVE, "service_updated"),
    _move_service(ServiceStatus.DEPRECATED, "service_deprecated"),
    _move_service(ServiceStatus.SUSPENDED, "service_suspended"),
    _move_service(ServiceStatus.RETIRED, "service_retired"),
]


def write_lifecycles(count: int, prefix: str = "svc", *, with_consumers: bool = True) -> list[str]:
    """`count` services taken through their whole lifecycle step by step, side by side, so their
    events interleave in the outbox; one transaction per step, as the platform does. Returns the ids.
    With consumers, each service also gets a consumer whose events go under its own (consumer id) key."""
    with session_scope() as session:
        ids = [services.create_submitted(session, make_spec(name=f"{prefix}-{i}"), PROVIDER).id for i in range(count)]
    steps = LIFECYCLE if with_consumers else [s for s in LIFECYCLE if s not in (_consumer_events, _billing)]
    for step in steps:
        for service_id in ids:
            with session_scope() as session:
                step(session, service_id)
    return ids


def write_updates(service_ids: list[str], rounds: int) -> None:
    """`rounds` metadata-update events per service, round robin (one transaction per event)."""
    for n in range(rounds):
        for service_id in service_ids:
            with session_scope() as session:
                service = services.get(session, service_id)
                data = event_data(service, f"metadata updated ({n})", changed=["description"])
                outbox.add(session, aggregate_id=service_id, event_type="service_updated", data=data)
