"""Consumer accounts and API keys over HTTP: secrets shown once, hashes stored, revoke, rotate, block."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from storage.database import session_scope
from storage.repositories import audit
from storage.repositories.audit import AuditFilter
from tests.support import auth
from tests.support.consumption import key_refusal, live_service

ME = "/api/v1/consumers/me"
KEYS = f"{ME}/keys"


@pytest.fixture
def client(anonymous: TestClient) -> TestClient:
    """Called as consumer "alice" unless a test sends other headers."""
    anonymous.headers.update(auth.consumer("alice"))
    return anonymous


def new_key(client: TestClient, **body: object) -> dict[str, object]:
    response = client.post(KEYS, json={"name": "ci", **body})
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    return dict(response.json())


def test_the_first_call_opens_the_consumer_account(client: TestClient) -> None:
    me = client.get(ME)
    assert me.status_code == 200
    assert (me.json()["id"], me.json()["status"], me.json()["createdBy"]) == ("alice", "active", "alice")
    assert client.get("/api/v1/consumers/bob").status_code == 404, "another consumer's account does not exist"
    assert client.get(ME, headers=auth.provider()).status_code == 403
    assert client.get(ME, headers={"Authorization": ""}).status_code == 401


def test_a_key_is_shown_once_and_only_its_hash_is_stored(client: TestClient) -> None:
    created = new_key(client, expiresAt=(datetime.now(UTC) + timedelta(days=30)).isoformat())
    secret, key = str(created["secret"]), dict(created["key"])  # type: ignore[call-overload]
    assert secret.startswith(f"mk_live_{key['id']}_") and key["status"] == "active"
    assert key["hint"] == f"mk_live_{key['id']}_…{secret[-4:]}"
    with session_scope() as session:
        row = session.execute(text("SELECT * FROM api_keys WHERE id = :id"), {"id": key["id"]}).mappings().one()
    assert secret.split("_")[-1] not in " ".join(str(v) for v in row.values()), "the secret is not stored"
    assert len(row["secret_hash"]) == 64 and row["hash_scheme"] == "hmac-sha256"
    assert key_refusal(secret) is None

    listed = client.get(KEYS)
    assert listed.status_code == 200 and set(listed.json()) == {"items", "total", "offset", "limit"}
    assert listed.json()["total"] == 1 and secret not in listed.text and "secret" not in listed.json()["items"][0]
    assert secret not in client.get(f"{KEYS}/{key['id']}").text


def test_replaying_an_idempotent_key_creation_never_stores_the_secret(client: TestClient) -> None:
    headers = {"Idempotency-Key": "make-key-1"}
    first = client.post(KEYS, json={"name": "ci"}, headers=headers)
    second = client.post(KEYS, json={"name": "ci"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["key"]["id"] != second.json()["key"]["id"], "not replayed: a secret is never kept"
    with session_scope() as session:
        stored = session.execute(text("SELECT response_body FROM idempotency_keys")).scalars().all()
    assert not any(first.json()["secret"] in (body or "") for body in stored)


def test_a_revoked_key_is_refused(client: TestClient) -> None:
    created = new_key(client)
    key_id = created["key"]["id"]  # type: ignore[index]
    revoked = client.delete(f"{KEYS}/{key_id}", params={"reason": "leaked in a log"})
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert key_refusal(str(created["secret"])) == "the API key has been revoked"
    assert client.delete(f"{KEYS}/{key_id}").status_code == 409
    assert client.get(KEYS).json()["total"] == 0
    assert client.get(KEYS, params={"includeEnded": "true"}).json()["total"] == 1
    with session_scope() as session:
        trail, _ = audit.search(session, AuditFilter(consumer_id="alice"), 0, 10)
    assert [a.action for a in trail][:2] == ["api_key_revoked", "api_key_created"]
    assert trail[0].reason == "leaked in a log" and trail[0].actor == "alice"


def test_rotation_keeps_the_old_key_for_the_grace_time_then_refuses_it(client: TestClient) -> None:
    created = new_key(client, requestsPerMinute=30)
    old_id, old_secret = created["key"]["id"], str(created["secret"])  # type: ignore[index]
    rotated = client.post(f"{KEYS}/{old_id}/rotation", json={"graceSeconds": 3600})
    assert rotated.status_code == 201, rotated.text
    assert rotated.headers["cache-control"] == "no-store"
    body = rotated.json()
    new_secret = body["secret"]
    assert body["key"]["rotatedFromId"] == old_id and body["key"]["requestsPerMinute"] == 30
    assert body["previous"]["status"] == "rotating" and body["previous"]["replacedById"] == body["key"]["id"]
    grace_end = datetime.fromisoformat(body["previous"]["expiresAt"])
    assert key_refusal(old_secret) is None and key_refusal(new_secret) is None
    assert key_refusal(old_secret, grace_end - timedelta(seconds=1)) is None
    assert key_refusal(old_secret, grace_end) == "the API key has expired"
    assert key_refusal(new_secret, grace_end + timedelta(days=365)) is None
    assert client.post(f"{KEYS}/{old_id}/rotation", json={"graceSeconds": 60}).status_code == 409, "once"

    immediate = client.post(f"{KEYS}/{body['key']['id']}/rotation", json={"graceSeconds": 0}).json()
    assert key_refusal(new_secret) == "the API key has expired"
    assert key_refusal(immediate["secret"]) is None


def test_key_requests_are_checked(client: TestClient) -> None:
    service_id = live_service()
    too_long = client.post(f"{KEYS}/x/rotation", json={"graceSeconds": 10**9})
    assert too_long.status_code == 422 and too_long.json()["error"]["details"][0]["pointer"] == "/graceSeconds"
    bad = client.post(KEYS, json={"name": "x", "expiresAt": "2001-01-01T00:00:00Z", "serviceIds": [service_id, "nope"]})
    assert bad.status_code == 422
    assert {d["pointer"] for d in bad.json()["error"]["details"]} == {"/expiresAt", "/serviceIds/1"}
    assert client.post(KEYS, json={"name": ""}).status_code == 422
    assert client.post(KEYS, json={"name": "x", "requestsPerMinute": 0}).status_code == 422
    scoped = new_key(client, serviceIds=[service_id])
    assert scoped["key"]["serviceIds"] == [service_id]  # type: ignore[index]
    assert client.get(f"{KEYS}/nope").status_code == 404
    assert client.delete(f"/api/v1/consumers/bob/keys/{scoped['key']['id']}").status_code == 404  # type: ignore[index]


def test_admin_creates_lists_blocks_and_unblocks_consumers(client: TestClient) -> None:
    admin = auth.admin()
    created = client.post(
        "/api/v1/consumers", json={"id": "bob", "name": "Bob Ltd", "email": "ops@bob.example"}, headers=admin
    )
    assert created.status_code == 201 and created.json()["status"] == "active"
    assert client.post("/api/v1/consumers", json={"id": "bob", "name": "again"}, headers=admin).status_code == 409
    bad_id = client.post("/api/v1/consumers", json={"id": "bad id", "name": "x"}, headers=admin)
    assert bad_id.status_code == 422 and bad_id.json()["error"]["details"][0]["pointer"] == "/id"
    assert client.get("/api/v1/consumers").status_code == 403, "consumers do not list consumers"

    bob_key = client.post("/api/v1/consumers/bob/keys", json={"name": "by-admin"}, headers=admin).json()["secret"]
    blocked = client.post("/api/v1/consumers/bob/block", json={"reason": "unpaid invoices"}, headers=admin)
    assert blocked.status_code == 200
    assert (blocked.json()["status"], blocked.json()["blockedReason"]) == ("blocked", "unpaid invoices")
    assert key_refusal(bob_key) == "the consumer is blocked: unpaid invoices"
    assert client.post("/api/v1/consumers/bob/block", json={"reason": "again"}, headers=admin).status_code == 409
    as_bob = auth.consumer("bob")
    refused = client.post(KEYS, json={"name": "new"}, headers=as_bob)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "consumer_blocked")
    assert client.get(KEYS, headers=as_bob).status_code == 200, "a blocked consumer still sees its keys"

    listed = client.get("/api/v1/consumers", params={"status": "blocked"}, headers=admin).json()
    assert [c["id"] for c in listed["items"]] == ["bob"] and listed["total"] == 1
    unblocked = client.delete("/api/v1/consumers/bob/block", params={"reason": "paid"}, headers=admin)
    assert unblocked.status_code == 200 and unblocked.json()["status"] == "active"
    assert key_refusal(bob_key) is None
    actions = [
        e["action"] for e in client.get("/api/v1/audit", params={"consumerId": "bob"}, headers=admin).json()["items"]
    ]
    assert actions == ["consumer_unblocked", "consumer_blocked", "api_key_created", "consumer_created"]
