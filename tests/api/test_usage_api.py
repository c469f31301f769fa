"""Usage endpoints on both backends: a consumer's own calls, a service's calls for its provider and staff."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.app import create_app
from gateway.usage import UsageRecord as Handed
from gateway.writer import rows_of
from storage.database import get_engine, reset_engine, session_scope
from storage.models import UsageRollup
from storage.repositories import usage as usage_repo
from storage.repositories import usage_rollups
from tests.support import auth
from tests.support.gateway import add_service
from tests.support.sql import database_reads
from tests.support.usage import random_records
from tests.support.usage import store as store_usage

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


def test_long_ranges_read_whole_days_from_the_rollups_and_stay_exact(api: TestClient) -> None:
    store_usage(random_records(300, datetime(2026, 9, 1, tzinfo=UTC).date(), 12))
    with session_scope() as session:
        usage_rollups.roll_up(session, timedelta(0))
    late = handed(99, "alice", "svc-1", datetime(2026, 9, 5, 8, tzinfo=UTC), cost="2")
    store([late])  # after the rollup: read raw until the next one
    params: dict[str, str | int] = {"from": "2026-09-02T10:00:00Z", "to": "2026-09-11T18:30:00Z", "limit": 5}
    headers = auth.consumer("alice")
    reads = database_reads(lambda: api.get("/api/v1/consumers/me/usage", params=params, headers=headers))
    assert any("usage_rollups" in statement for statement in reads)
    page = api.get("/api/v1/consumers/me/usage", params=params, headers=headers).json()
    query = usage_repo.UsageQuery(
        consumer_id="alice", start=datetime(2026, 9, 2, 10, tzinfo=UTC), end=datetime(2026, 9, 11, 18, 30, tzinfo=UTC)
    )
    with session_scope() as session:
        raw = usage_repo.totals(session, query)
        newest = usage_repo.list_records(session, query, 0, 5)[0]
    assert page["total"] == page["totals"]["requests"] == raw.requests
    assert (page["totals"]["inputTokens"], page["totals"]["outputTokens"]) == (raw.input_tokens, raw.output_tokens)
    assert {c: Decimal(a) for c, a in page["totals"]["cost"].items()} == raw.cost
    assert [item["requestId"] for item in page["items"]] == [r.request_id for r in newest]
    naive = {**params, "from": "2026-09-02T10:00:00", "to": "2026-09-11T18:30:00"}  # no offset: UTC
    assert api.get("/api/v1/consumers/me/usage", params=naive, headers=headers).json()["totals"] == page["totals"]
    with session_scope() as session:  # the whole days are the rollups' figures, not a count of the rows
        session.execute(update(UsageRollup).where(UsageRollup.consumer_id == "alice").values(requests=0))
    tampered = api.get("/api/v1/consumers/me/usage", params=params, headers=headers).json()
    assert tampered["totals"]["requests"] < raw.requests
