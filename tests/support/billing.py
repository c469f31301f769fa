"""Usage rows for statement and quota tests, stored the way the usage writer stores them."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from core.plans import Plan
from gateway.usage import UsageRecord as Handed
from storage.database import session_scope
from storage.models import QuotaAlert
from storage.repositories import consumers, quotas, service_subscriptions, services
from storage.repositories import usage as usage_repo
from storage.repositories.services import Actor

_ids = itertools.count()
TESTER = Actor("tester", "admin")


def usage_row(
    consumer_id: str,
    service_id: str,
    at: datetime,
    cost: str | Decimal = "0.000123",
    *,
    subscription_id: str | None = None,
    tokens: tuple[int, int] = (5, 7),
    status: int = 200,
    currency: str = "USD",
    request_id: str | None = None,
) -> dict[str, Any]:
    """One usage record as the writer hands it to the repository."""
    return {
        "request_id": request_id or f"req-{next(_ids)}-{at.timestamp():.0f}",
        "occurred_at": at,
        "consumer_id": consumer_id,
        "key_id": "k1",
        "service_id": service_id,
        "service_version": "1.0.0",
        "subscription_id": subscription_id,
        "route": "chat.completions",
        "status": status,
        "latency_ms": 1.5,
        "ttfb_ms": 1.0,
        "input_tokens": tokens[0] if status == 200 else 0,
        "output_tokens": tokens[1] if status == 200 else 0,
        "cost": Decimal(cost) if status == 200 else Decimal(0),
        "currency": currency,
        "stream": False,
        "error": None if status == 200 else "upstream_error",
    }


def store_rows(
    session: Session, rows: Sequence[dict[str, Any]], thresholds: Sequence[int] = (80, 100), now: datetime | None = None
) -> list[QuotaAlert]:
    """Insert the rows and count them against quotas, in the caller's transaction (as gateway.writer.store)."""
    usage_repo.ensure_partitions(session, [r["occurred_at"] for r in rows])
    stored = usage_repo.insert_records(session, rows)
    return quotas.count_usage(session, stored, thresholds, now=now)


def subscribed(consumer_id: str, service_id: str, requests_per_month: int | None, tokens_per_month: int | None) -> str:
    """An active subscription of the consumer (created if new) to the service under a plan with these quotas."""
    quotas_of_plan = {"requests_per_month": requests_per_month, "tokens_per_month": tokens_per_month}
    plan = Plan(name="metered", requests_per_minute=600, **quotas_of_plan)
    with session_scope() as session:
        consumers.ensure(session, consumer_id, TESTER)
        service = services.get(session, service_id)
        return service_subscriptions.subscribe(session, consumer_id, service, plan, "USD", TESTER, pending=False).id


def call(n: int, subscription_id: str, service_id: str, at: datetime, tokens: int = 10, status: int = 200) -> bytes:
    """A call's record as the gateway hands it off (tokens split between input and output)."""
    ok = status == 200
    return Handed(
        request_id=f"r-{subscription_id[:8]}-{at:%Y%m}-{n}",
        occurred_at=at.timestamp(),
        consumer_id="carol",
        key_id="k1",
        service_id=service_id,
        service_version="1.0.0",
        subscription_id=subscription_id,
        route="chat.completions",
        status=status,
        latency_ms=2.0,
        ttfb_ms=1.0,
        input_tokens=tokens // 2 if ok else 0,
        output_tokens=tokens - tokens // 2 if ok else 0,
        cost=Decimal("0.001") if ok else Decimal(0),
        currency="USD",
        error=None if ok else "upstream_error",
    ).to_json()
