"""Webhook deliveries and subscriptions over HTTP: who may do what, validation, paging."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from api.auth import Role, issue_token
from core.settings import AuthSettings
from storage.database import reset_engine, session_scope
from storage.repositories import services
from storage.repositories.services import Actor
from tasks.notify import DeliveriesPending, NotificationInput, notify
from tests.support.specs import make_spec
from tests.support.webhook_receiver import WebhookReceiver

DELIVERIES = "/api/v1/webhooks/deliveries"
SECRET = "webhook-api-secret"


@pytest.fixture
def client(anonymous: TestClient) -> TestClient:
    """These tests send their own tokens (or none)."""
    return anonymous


def bearer(role: Role, subject: str = "someone") -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(subject, role, AuthSettings())}"}


def new_service(name: str = "acme-chat") -> str:
    """A live service (consumers subscribe to what the catalogue shows)."""
    with session_scope() as session:
        service = services.create_submitted(session, make_spec(name=name), Actor("acme", "provider"))
        service.status = "active"
        return service.id


def subscriptions(service_id: str) -> str:
    return f"/api/v1/services/{service_id}/subscriptions"


def test_listing_deliveries_needs_governance_or_admin(client: TestClient) -> None:
    assert client.get(DELIVERIES).status_code == 401
    for role in (Role.PROVIDER, Role.CONSUMER):
        forbidden = client.get(DELIVERIES, headers=bearer(role))
        assert forbidden.status_code == 403
        assert forbidden.json()["error"]["code"] == "forbidden"
    assert client.get(DELIVERIES, headers=bearer(Role.GOVERNANCE)).json() == {
        "items": [],
        "total": 0,
        "offset": 0,
        "limit": 20,
    }
    bad = client.get(DELIVERIES, headers=bearer(Role.ADMIN), params={"status": "lost", "audience": "everyone"})
    assert bad.status_code == 422
    assert {d["pointer"] for d in bad.json()["error"]["details"]} == {"/query/status", "/query/audience"}


def test_deliveries_are_listed_with_their_attempts_and_filtered(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    with WebhookReceiver(SECRET, always_fail=True) as failing, WebhookReceiver(SECRET, fail_first=1) as flaky:
        monkeypatch.setenv("MARKETPLACE_WEBHOOKS__SECRET", SECRET)
        monkeypatch.setenv("MARKETPLACE_WEBHOOKS__GOVERNANCE_URLS", json.dumps([failing.url, flaky.url]))
        monkeypatch.setenv("MARKETPLACE_WEBHOOKS__MAX_ATTEMPTS", "2")
        reset_engine()
        first, second = new_service("first"), new_service("second")
        for service_id in (first, second):
            inp = NotificationInput(service_id=service_id, event_type="approval_requested", audience="governance")
            with pytest.raises(DeliveriesPending):
                notify.fn(inp)
            notify.fn(inp)
    admin = bearer(Role.ADMIN)
    page = client.get(DELIVERIES, headers=admin, params={"serviceId": first}).json()
    assert page["total"] == 2
    by_url = {item["url"]: item for item in page["items"]}
    assert by_url[failing.url]["status"] == "failed"
    assert [(a["attempt"], a["statusCode"]) for a in by_url[failing.url]["attempts"]] == [(1, 500), (2, 500)]
    delivered = by_url[flaky.url]
    assert (delivered["status"], delivered["attemptCount"], delivered["audience"]) == ("delivered", 2, "governance")
    assert [a["statusCode"] for a in delivered["attempts"]] == [500, 200]
    assert delivered["payload"]["type"] == "marketplace.approval_requested"
    assert delivered["payload"]["data"]["serviceId"] == first
    failed = client.get(DELIVERIES, headers=admin, params={"status": "failed"}).json()
    assert (failed["total"], {i["serviceId"] for i in failed["items"]}) == (2, {first, second})
    paged = client.get(DELIVERIES, headers=admin, params={"limit": 3, "offset": 3}).json()
    assert (paged["total"], len(paged["items"])) == (4, 1)
    assert client.get(DELIVERIES, headers=admin, params={"audience": "consumers"}).json()["total"] == 0


def test_a_consumer_subscribes_idempotently(client: TestClient) -> None:
    service_id = new_service()
    carol = bearer(Role.CONSUMER, "carol")
    created = client.post(subscriptions(service_id), json={"callbackUrl": "https://carol.example/hooks"}, headers=carol)
    assert created.status_code == 201
    body = created.json()
    assert (body["serviceId"], body["consumerId"], body["callbackUrl"]) == (
        service_id,
        "carol",
        "https://carol.example/hooks",
    )
    again = client.post(subscriptions(service_id), json={"callbackUrl": "https://carol.example/hooks"}, headers=carol)
    assert (again.status_code, again.json()["id"]) == (201, body["id"])
    taken = client.post(
        subscriptions(service_id), json={"callbackUrl": "https://carol.example/hooks"}, headers=bearer(Role.CONSUMER)
    )
    assert taken.status_code == 409
    assert taken.json()["error"]["details"][0]["pointer"] == "/callbackUrl"


@pytest.mark.parametrize("url", ["ftp://carol.example/hooks", "carol.example/hooks", "https://", "x" * 3000])
def test_a_callback_must_be_an_http_url(client: TestClient, url: str) -> None:
    response = client.post(subscriptions(new_service()), json={"callbackUrl": url}, headers=bearer(Role.CONSUMER))
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["pointer"] == "/body/callbackUrl"


def test_subscription_refusals(client: TestClient) -> None:
    service_id = new_service()
    body = {"callbackUrl": "http://127.0.0.1:9/hook"}
    assert client.post(subscriptions(service_id), json=body).status_code == 401
    assert client.post(subscriptions(service_id), json=body, headers=bearer(Role.PROVIDER)).status_code == 403
    assert client.get(subscriptions(service_id), headers=bearer(Role.GOVERNANCE)).status_code == 403
    missing = client.post(subscriptions("no-such-service"), json=body, headers=bearer(Role.CONSUMER))
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    assert client.get(subscriptions("no-such-service"), headers=bearer(Role.ADMIN)).status_code == 404
    no_body = client.post(subscriptions(service_id), headers=bearer(Role.CONSUMER))
    assert no_body.status_code == 422


def test_consumers_see_and_remove_only_their_own(client: TestClient) -> None:
    service_id = new_service()
    carol, dave = bearer(Role.CONSUMER, "carol"), bearer(Role.CONSUMER, "dave")
    mine = client.post(subscriptions(service_id), json={"callbackUrl": "https://carol.example/a"}, headers=carol)
    theirs = client.post(subscriptions(service_id), json={"callbackUrl": "https://dave.example/a"}, headers=dave)
    mine_id, theirs_id = mine.json()["id"], theirs.json()["id"]
    listed = client.get(subscriptions(service_id), headers=carol).json()
    assert (listed["serviceId"], [s["id"] for s in listed["items"]]) == (service_id, [mine_id])
    everyone = client.get(subscriptions(service_id), headers=bearer(Role.ADMIN)).json()["items"]
    assert {s["id"] for s in everyone} == {mine_id, theirs_id}
    assert client.delete(f"{subscriptions(service_id)}/{theirs_id}", headers=carol).status_code == 404
    assert client.delete(f"{subscriptions(new_service('other'))}/{mine_id}", headers=carol).status_code == 404
    removed = client.delete(f"{subscriptions(service_id)}/{mine_id}", headers=carol)
    assert (removed.status_code, removed.content) == (204, b"")
    assert client.delete(f"{subscriptions(service_id)}/{mine_id}", headers=carol).status_code == 404
    assert client.get(subscriptions(service_id), headers=carol).json()["items"] == []
    assert client.delete(f"{subscriptions(service_id)}/{theirs_id}", headers=bearer(Role.ADMIN)).status_code == 204
