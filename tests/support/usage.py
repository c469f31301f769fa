"""Usage records for tests: made as the gateway hands them off, stored as the writer stores them."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from gateway.usage import UsageRecord as Handed
from gateway.writer import rows_of
from storage.database import session_scope
from storage.models import UsageRecord, UsageRollup
from storage.repositories import usage as usage_repo
from storage.repositories.usage_rollups import percentile


def handed(
    request_id: str,
    at: datetime,
    *,
    consumer: str = "alice",
    service: str = "svc-1",
    key: str = "k1",
    cost: str = "0.000123",
    currency: str = "USD",
    status: int = 200,
    latency_ms: float = 12.5,
    tokens: tuple[int, int] = (5, 7),
    error: str | None = None,
) -> Handed:
    return Handed(
        request_id=request_id,
        occurred_at=at.timestamp(),
        consumer_id=consumer,
        key_id=key,
        service_id=service,
        service_version="1.0.0",
        subscription_id="s1",
        route="chat.completions",
        status=status,
        latency_ms=latency_ms,
        ttfb_ms=None,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost=Decimal(cost),
        currency=currency,
        error=error,
    )


def store(records: list[Handed]) -> None:
    """As the writer does: the months' partitions (PostgreSQL), then one idempotent insert."""
    with session_scope() as session:
        usage_repo.ensure_partitions(session, [datetime.fromtimestamp(r.occurred_at, UTC) for r in records])
        usage_repo.insert_records(session, rows_of([r.to_json() for r in records]))


def random_records(count: int, first_day: date, days: int, seed: int = 7, prefix: str = "r") -> list[Handed]:
    """Calls spread over `days` days: three consumers, two services, keys, two currencies, some errors."""
    rng = random.Random(seed)
    start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    out = []
    for n in range(count):
        failed = rng.random() < 0.1
        out.append(
            handed(
                f"{prefix}-{n}",
                start + timedelta(seconds=rng.uniform(0, days * 86400)),
                consumer=rng.choice(["alice", "bob", "carol"]),
                service=rng.choice(["svc-1", "svc-2"]),
                key=rng.choice(["k1", "k2"]),
                cost="0" if failed else f"0.{rng.randrange(1, 10**9):09d}",
                currency=rng.choice(["USD", "USD", "EUR"]),
                status=502 if failed else 200,
                latency_ms=round(rng.uniform(1, 900), 3),
                tokens=(0, 0) if failed else (rng.randrange(1, 500), rng.randrange(1, 900)),
                error="upstream_unavailable" if failed else None,
            )
        )
    return out


def raw_groups() -> dict[tuple[Any, ...], dict[str, Any]]:
    """What the rollups should hold, computed here from every raw row."""
    groups: dict[tuple[Any, ...], list[UsageRecord]] = defaultdict(list)
    with session_scope() as session:
        for r in session.scalars(select(UsageRecord)):
            day = r.occurred_at.astimezone(UTC).date()
            groups[(r.consumer_id, day, r.service_id, r.key_id, r.currency)].append(r)
        return {key: _figures(rows) for key, rows in groups.items()}


def _figures(rows: list[UsageRecord]) -> dict[str, Any]:
    latencies = sorted(r.latency_ms for r in rows)
    return {
        "requests": len(rows),
        "errors": sum(1 for r in rows if not (200 <= r.status < 300 and r.error is None)),
        "input_tokens": sum(r.input_tokens for r in rows),
        "output_tokens": sum(r.output_tokens for r in rows),
        "cost": sum((r.cost for r in rows), Decimal(0)),
        "p50": percentile(latencies, 0.5),
        "p95": percentile(latencies, 0.95),
        "p99": percentile(latencies, 0.99),
    }


def rollup_groups() -> dict[tuple[Any, ...], dict[str, Any]]:
    with session_scope() as session:
        return {
            (u.consumer_id, u.day, u.service_id, u.key_id, u.currency): {
                "requests": u.requests,
                "errors": u.errors,
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
                "cost": u.cost,
                "p50": u.latency_p50_ms,
                "p95": u.latency_p95_ms,
                "p99": u.latency_p99_ms,
            }
            for u in session.scalars(select(UsageRollup))
        }
