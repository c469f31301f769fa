"""Approvals, deprecation, versions, updates and history over HTTP: the refusals and the reads.

What needs a worker (decisions that resume runs, retirement) is in tests/e2e.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.auth import MALFORMED, Role, issue_token
from core.settings import AuthSettings
from tests.support.specs import make_spec

SERVICES = "/api/v1/services"


def bearer(role: Role, subject: str = "someone", **kwargs: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(subject, role, AuthSettings(), **kwargs)}"}  # type: ignore[arg-type]


def submitted(client: TestClient) -> str:
    response = client.post(SERVICES, json=make_spec())
    assert response.status_code == 202
    return str(response.json()["serviceId"])


def test_approval_queue_needs_governance(anonymous: TestClient) -> None:
    client = anonymous  # every call below sends its own token, or none
    assert client.get("/api/v1/approvals").status_code == 401
    forbidden = client.get("/api/v1/approvals", headers=bearer(Role.PROVIDER))
    assert forbidden.status_code == 403
    assert "governance" in forbidden.json()["error"]["message"]
    assert client.get("/api/v1/approvals", headers=bearer(Role.GOVERNANCE)).json()["items"] == []
    assert client.get("/api/v1/approvals", headers=bearer(Role.ADMIN), params={"status": "approved"}).status_code == 200
    assert client.get("/api/v1/approvals", headers=bearer(Role.ADMIN), params={"status": "maybe"}).status_code == 422


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Authorization": "Bearer not-a-jwt"}, 401),
        ({"Authorization": "Basic Zm9vOmJhcg=="}, 401),
    ],
)
def test_bad_credentials_are_refused(client: TestClient, headers: dict[str, str], status: int) -> None:
    response = client.post("/api/v1/approvals/x", json={"decision": "approve"}, headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.%%%.x", "Zm9v.YmFy"])
def test_a_malformed_token_gets_a_plain_401(client: TestClient, token: str) -> None:
    response = client.get("/api/v1/approvals", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"] == {"code": "unauthorized", "message": MALFORMED, "details": []}


def test_expired_and_forged_tokens_are_refused(client: TestClient) -> None:
    expired = bearer(Role.GOVERNANCE, ttl_seconds=-120)  # past the 30 s clock-skew leeway
    assert "expired" in client.get("/api/v1/approvals", headers=expired).json()["error"]["message"]
    forged = issue_token("mallory", Role.ADMIN, AuthSettings(jwt_secret="another-secret-that-is-long-enough-for-hs256"))  # type: ignore[arg-type]
    assert client.get("/api/v1/approvals", headers={"Authorization": f"Bearer {forged}"}).status_code == 401


def test_deciding_on_an_unknown_service_is_404(client: TestClient) -> None:
    unknown = "/api/v1/approvals/0b8e6bd5-5a9e-4a57-9b3e-8f9c1c2d3e4f"
    response = client.post(unknown, json={"decision": "approve"}, headers=bearer(Role.ADMIN))
    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "not_found",
        "message": "service 0b8e6bd5-5a9e-4a57-9b3e-8f9c1c2d3e4f not found",
        "details": [],
    }


def test_deciding_on_a_service_not_waiting_is_409(client: TestClient) -> None:
    service_id = submitted(client)
    response = client.post(
        f"/api/v1/approvals/{service_id}",
        json={"decision": "approve", "comment": "ok"},
        headers=bearer(Role.GOVERNANCE),
    )
    assert response.status_code == 409
    assert "not waiting" in response.json()["error"]["message"]
    bad = client.post(f"/api/v1/approvals/{service_id}", json={"decision": "maybe"}, headers=bearer(Role.ADMIN))
    assert bad.status_code == 422


def test_lifecycle_moves_on_a_service_not_live_are_409(client: TestClient) -> None:
    service_id = submitted(client)
    assert client.delete(f"{SERVICES}/{service_id}").status_code == 409
    assert client.delete(f"{SERVICES}/{service_id}/deprecation").status_code == 409
    new_version = client.post(f"{SERVICES}/{service_id}/versions", json=make_spec(version="2.0.0"))
    assert new_version.status_code == 409
    assert "active" in new_version.json()["error"]["message"]
    update = client.put(f"{SERVICES}/{service_id}", json={"description": "new words"})
    assert update.status_code == 409


def test_update_refuses_fields_that_need_a_new_version(client: TestClient) -> None:
    service_id = submitted(client)
    response = client.put(f"{SERVICES}/{service_id}", json={"endpoint": {"url": "https://x.example"}, "name": "y"})
    assert response.status_code == 422
    details = {d["pointer"]: d["message"] for d in response.json()["error"]["details"]}
    assert "new version" in details["/endpoint"]
    assert "identifies" in details["/name"]


def test_history_and_versions_of_a_new_service(client: TestClient) -> None:
    service_id = submitted(client)
    history = client.get(f"{SERVICES}/{service_id}/history").json()
    assert [(h["action"], h["toStatus"], h["actor"]) for h in history["items"]] == [("submitted", "submitted", "acme")]
    assert history["items"][0]["at"]
    versions = client.get(f"{SERVICES}/{service_id}/versions").json()
    assert versions["currentVersion"] == "1.0.0"
    assert client.get(f"{SERVICES}/nope/history").status_code == 404
