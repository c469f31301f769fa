"""Statement endpoints on both backends: each party reads its own, admin reads all and corrects."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from storage.database import reset_engine, session_scope
from storage.repositories import statements
from tests.support import auth
from tests.support.billing import store_rows, usage_row
from tests.support.consumption import live_service

PERIOD = "2026-10"
START = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.fixture
def api(database_url: str) -> Iterator[TestClient]:
    """The API in-process; these routes need no Prefect server."""
    reset_engine()
    with TestClient(create_app()) as client:
        yield client
    reset_engine()


@pytest.fixture
def issued(api: TestClient) -> dict[str, str]:
    """October's statements: alice and bob called acme's service, carol called beta's."""
    acme, beta = live_service("acme-chat"), live_service("beta-chat", provider="beta")
    rows = [usage_row("alice", acme, START + timedelta(hours=n), "0.333333333333") for n in range(3)]
    rows += [usage_row("bob", acme, START + timedelta(days=2), "1.005"), usage_row("carol", beta, START, "2")]
    with session_scope() as session:
        store_rows(session, rows)
        for party in statements.parties(session, PERIOD):
            statements.issue(session, party, PERIOD, Decimal(10), "run-x")
    return {"acme": acme, "beta": beta}


def test_a_consumer_reads_its_own_statements_with_lines(api: TestClient, issued: dict[str, str]) -> None:
    page = api.get("/api/v1/consumers/me/statements", headers=auth.consumer("alice")).json()
    assert (page["total"], page["offset"], page["limit"]) == (1, 0, 20)
    (mine,) = page["items"]
    assert (mine["partyType"], mine["partyId"], mine["period"], mine["currency"]) == (
        "consumer",
        "alice",
        PERIOD,
        "USD",
    )
    assert (mine["gross"], mine["total"], mine["adjustedTotal"], mine["fee"]) == ("0.999999999999", "1.00", "1.00", "0")
    assert mine["lines"] == [
        {
            "serviceId": issued["acme"], "serviceName": "acme-chat", "requests": 3, "inputTokens": 15,
            "outputTokens": 21, "gross": "0.999999999999", "planFees": "0", "fee": "0", "net": "0.999999999999",
        }
    ]  # fmt: skip
    assert api.get(f"/api/v1/statements/{mine['id']}", headers=auth.consumer("alice")).json() == mine
    assert api.get(f"/api/v1/statements/{mine['id']}", headers=auth.consumer("bob")).status_code == 404
    assert api.get(f"/api/v1/statements/{mine['id']}", headers=auth.provider("alice")).status_code == 404
    other_month = api.get(
        "/api/v1/consumers/me/statements", params={"period": "2026-09"}, headers=auth.consumer("alice")
    )
    assert other_month.json()["total"] == 0
    assert api.get("/api/v1/consumers/me/statements", headers=auth.provider()).status_code == 403
    assert api.get("/api/v1/consumers/me/statements").status_code == 401
    bad = api.get("/api/v1/consumers/me/statements", params={"period": "2026-13"}, headers=auth.consumer("alice"))
    assert bad.status_code == 422


def test_a_provider_reads_what_it_earned_less_the_fee(api: TestClient, issued: dict[str, str]) -> None:
    page = api.get("/api/v1/providers/me/statements", headers=auth.provider("acme")).json()
    (earned,) = page["items"]
    assert (earned["partyType"], earned["partyId"], earned["feePercent"]) == ("provider", "acme", "10")
    assert (earned["gross"], earned["fee"], earned["net"], earned["total"]) == (
        "2.004999999999", "0.2005", "1.804499999999", "1.80",
    )  # fmt: skip
    assert [line["requests"] for line in earned["lines"]] == [4]
    assert api.get(f"/api/v1/statements/{earned['id']}", headers=auth.provider("acme")).status_code == 200
    assert api.get(f"/api/v1/statements/{earned['id']}", headers=auth.provider("beta")).status_code == 404
    assert api.get("/api/v1/providers/me/statements", headers=auth.consumer("alice")).status_code == 403


def test_admin_reads_all_and_corrects_with_an_adjustment(api: TestClient, issued: dict[str, str]) -> None:
    everything = api.get("/api/v1/statements", headers=auth.admin()).json()
    assert everything["total"] == 5  # alice, bob, carol; acme, beta
    providers = api.get("/api/v1/statements", params={"partyType": "provider"}, headers=auth.admin()).json()
    assert sorted(s["partyId"] for s in providers["items"]) == ["acme", "beta"]
    paged = api.get("/api/v1/statements", params={"limit": 2, "offset": 4}, headers=auth.admin()).json()
    assert (paged["total"], len(paged["items"])) == (5, 1)
    for who in (auth.governance(), auth.provider(), auth.consumer("alice")):
        assert api.get("/api/v1/statements", headers=who).status_code == 403

    bob = api.get("/api/v1/statements", params={"partyId": "bob"}, headers=auth.admin()).json()["items"][0]
    assert bob["total"] == "1.01", "1.005 rounds half up"
    url = f"/api/v1/statements/{bob['id']}/adjustments"
    body = {"amount": "-0.505", "reason": "half refunded after an outage"}
    assert api.post(url, json=body, headers=auth.consumer("bob")).status_code == 403
    created = api.post(url, json=body, headers=auth.admin())
    assert created.status_code == 201
    assert (created.json()["amount"], created.json()["createdBy"]) == ("-0.505", "root-admin")
    again = api.get(f"/api/v1/statements/{bob['id']}", headers=auth.consumer("bob")).json()
    assert (again["total"], again["adjustedTotal"], again["gross"]) == ("1.01", "0.50", "1.005")
    assert [a["reason"] for a in again["adjustments"]] == ["half refunded after an outage"]

    for amount, why in ((1.5, "a JSON number"), ("abc", "not decimal"), ("1.1234567890123", "13 places")):
        refused = api.post(url, json={"amount": amount, "reason": "x"}, headers=auth.admin())
        assert refused.status_code == 422, why
        assert refused.json()["error"]["details"][0]["pointer"].endswith("/amount")
    zero = api.post(url, json={"amount": "0", "reason": "x"}, headers=auth.admin())
    assert zero.status_code == 422
    missing = api.post("/api/v1/statements/nope/adjustments", json=body, headers=auth.admin())
    assert missing.status_code == 404
    audit = api.get("/api/v1/audit", params={"action": "statement_adjusted"}, headers=auth.admin()).json()
    assert audit["total"] == 1 and audit["items"][0]["consumerId"] == "bob"
