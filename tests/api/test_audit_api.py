"""GET /api/v1/audit: administrators read the append-only trail with filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from api.auth import Role, issue_token
from core.settings import AuthSettings
from tests.support import auth
from tests.support.specs import make_spec


@pytest.fixture
def client(anonymous: TestClient) -> TestClient:
    """These tests send their own tokens (or none)."""
    return anonymous


def bearer(role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token('root-admin', role, AuthSettings())}"}


def test_admin_reads_the_trail_with_filters(client: TestClient) -> None:
    provider = {**auth.provider(), "User-Agent": "acme-cli/1.2"}
    first = client.post("/api/v1/services", json=make_spec(), headers=provider).json()["serviceId"]
    client.post("/api/v1/services", json=make_spec(name="other-chat"), headers=provider)
    everything = client.get("/api/v1/audit", headers=bearer(Role.ADMIN)).json()
    assert everything["total"] == 2
    assert [e["action"] for e in everything["items"]] == ["submitted", "submitted"]
    assert everything["items"][0]["id"] > everything["items"][1]["id"], "newest first"

    one = client.get("/api/v1/audit", params={"serviceId": first}, headers=bearer(Role.ADMIN)).json()
    assert [(e["serviceId"], e["actor"], e["toStatus"]) for e in one["items"]] == [(first, "acme", "submitted")]
    entry = one["items"][0]
    assert (entry["actorRole"], entry["actorIp"], entry["userAgent"]) == ("provider", "testclient", "acme-cli/1.2")
    assert entry["before"] is None
    assert entry["after"] == {"status": "submitted", "version": "1.0.0"}
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    assert client.get("/api/v1/audit", params={"since": later}, headers=bearer(Role.ADMIN)).json()["total"] == 0
    assert (
        client.get("/api/v1/audit", params={"action": "approval_decided"}, headers=bearer(Role.ADMIN)).json()["items"]
        == []
    )


def test_only_admins_read_the_trail(client: TestClient) -> None:
    assert client.get("/api/v1/audit").status_code == 401
    assert client.get("/api/v1/audit", headers=bearer(Role.GOVERNANCE)).status_code == 403
    bad = client.get("/api/v1/audit", params={"since": "yesterday"}, headers=bearer(Role.ADMIN))
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["pointer"] == "/query/since"
