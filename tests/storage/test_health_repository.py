"""The health repository on both backends: which calls count as the provider's traffic, and its p95."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from storage.database import session_scope
from storage.repositories import health, usage
from tests.support.gateway import add_service


def call(service_id: str, at: datetime, status: int = 200, *, latency: float = 100.0, **fields: Any) -> dict[str, Any]:
    row = {
        "request_id": str(uuid.uuid4()),
        "occurred_at": at,
        "consumer_id": "c-1",
        "key_id": "k" * 16,
        "service_id": service_id,
        "service_version": "1.0.0",
        "subscription_id": None,
        "route": "invoke",
        "status": status,
        "latency_ms": latency,
        "ttfb_ms": None,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost": Decimal(0),
        "currency": "USD",
        "stream": False,
        "error": None,
    }
    return {**row, **fields}


def test_traffic_counts_what_reached_the_provider_and_its_p95(database_url: str) -> None:
    service_id = add_service("http://127.0.0.1:9/")
    other = add_service("http://127.0.0.1:9/", name="other-chat")
    end = datetime.now(UTC).replace(microsecond=0)
    at = end - timedelta(seconds=30)
    rows = [
        call(service_id, at, latency=100.0),
        call(service_id, at, latency=200.0),
        call(service_id, at, latency=300.0),
        call(service_id, at, stream=True, ttfb_ms=50.0, latency=5000.0),  # a long stream: its first byte counts
        call(service_id, at, 500, latency=10.0),  # the provider answered 500
        call(service_id, at, 504, latency=30000.0, error="upstream_timeout"),
        call(service_id, at, 429, error="rate_limited"),  # refused by the gateway: not the provider's
        call(service_id, at, 503, error="service_unavailable"),
        call(service_id, end - timedelta(seconds=90), 500),  # before the window
        call(service_id, end, 500),  # the window's end is exclusive
        call(other, at, 500),
    ]
    with session_scope() as session:
        usage.ensure_partitions(session, [end])
        usage.insert_records(session, rows)
    with session_scope() as session:
        seen = health.traffic(session, service_id, end - timedelta(seconds=60), end)
        quiet = health.traffic(session, service_id, end - timedelta(hours=2), end - timedelta(hours=1))
    assert (seen.requests, seen.errors) == (6, 2)
    assert seen.latency_p95_ms == 300.0, "p95 of the successful calls, a stream by its first byte"
    assert (quiet.requests, quiet.errors, quiet.latency_p95_ms) == (0, 0, None)
