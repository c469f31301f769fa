"""Usage endpoints on both backends: a consumer's own calls, a service's calls for its provider and staff."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from gateway.usage import UsageRecord as Handed
from gateway.writer import rows_of
from storage.database import get_engine, reset_engine, session_scope
from storage.repositories import usage as usage_repo
from tests.support import auth
from tests.support.gateway import add_service

NOW = datetime.now(UTC)


@pytest.fixture
def api(database_url: str) -> Iterator[TestClient]:
    """The API in-process; these routes need no Prefect server."""
    reset_engine()
    with TestClient(create_app()) as client:
        yield client
    reset_engine()


def handed(n: int, consumer: str, service_id: str, at: datetime, cost: str = "0.000123") -> Handed:
    return Handed(
        request_id=f"req-{consumer}-{n}",
        occurred_at=at.timestamp(),
        consumer_id=consumer,
        key_id="k1",
        service_id=service_id,
        service_version="1.0.0",
        subscription_id="s1",
        route="chat.completions",
        status=200,
        latency_ms=1.5,
        ttfb_ms=1.0,
        input_tokens=5,
        output_tokens=7,
        cost=Decimal(cost),
        currency="USD",
    )


def store(records: list[Handed]) -> None:
    with session_scope() as session:
        usage_repo.ensure_partitions(session, [datetime.fromtimestamp(r.occurred_at, UTC) for r in records])
        usage_repo.insert_records(session, rows_of([r.to_json() for r in records]))


def test_a_consumer_reads_its_usage_with_totals_and_ranges(api: TestClient) -> None:
    service_id = add_service("http://127.0.0.1:9")
    mine = [handed(n, "alice", service_id, NOW - timedelta(minutes=n)) for n in range(5)]
    store([*mine, handed(0, "bob", service_id, NOW)])
    store(mine[:2])  # handed off twice (a replayed journal): still one row each
    page = api.get("/api/v1/consumers/me/usage", params={"limit": 2}, headers=auth.consumer("alice")).json()
    assert (page["total"], page["offset"], page["limit"], len(page["items"])) == (5, 0, 2, 2)
    assert page["items"][0]["requestId"] == "req-alice-0"  # newest first
    assert page["items"][0]["cost"] == "0.000123"
    assert page["totals"] == {"requests": 5, "inputTokens": 25, "outputTokens": 35, "cost": {"USD": "0.000615"}}
    since = (NOW - timedelta(minutes=2, seconds=30)).isoformat()
    ranged = api.get("/api/v1/consumers/me/usage", params={"from": since}, headers=auth.consumer("alice")).json()
    assert ranged["total"] == 3
    backwards = api.get(
        "/api/v1/consumers/me/usage", params={"from": NOW.isoformat(), "to": since}, headers=auth.consumer("alice")
    )
    assert backwards.status_code == 422
    assert api.get("/api/v1/consumers/me/usage", headers=auth.provider()).status_code == 403
    assert api.get("/api/v1/consumers/me/usage").status_code == 401


def test_a_service_usage_is_for_its_provider_and_staff(api: TestClient) -> None:
    service_id = add_service("http://127.0.0.1:9")
    store([handed(n, c, service_id, NOW) for n, c in enumerate(["alice", "bob"])])
    url = f"/api/v1/services/{service_id}/usage"
    for headers in (auth.provider("acme"), auth.governance(), auth.admin()):
        page = api.get(url, headers=headers).json()
        assert page["total"] == 2
        assert page["totals"]["requests"] == 2
    assert api.get(url, headers=auth.provider("other")).status_code == 403
    assert api.get(url, headers=auth.consumer("alice")).status_code == 403
    assert api.get("/api/v1/services/nope/usage", headers=auth.admin()).status_code == 404


def test_months_land_in_their_partitions(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("partitions are PostgreSQL's")
    far = datetime(2031, 5, 17, tzinfo=UTC)
    store([handed(0, "alice", "svc", far)])
    with get_engine().connect() as connection:
        from sqlalchemy import text

        where = connection.execute(text("SELECT tableoid::regclass::text FROM usage_records")).scalar_one()
    assert where == "usage_records_2031_05"
