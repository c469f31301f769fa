"""The provider's upstream credential (encrypted at rest, never returned, never logged) and the
signing secret (shown once to the owner, rotated with a grace time) over HTTP."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from core.settings import get_settings
from core.signing import sign, verify
from storage.database import session_scope
from storage.encryption import box_for
from storage.repositories import access, credentials
from tests.support import auth
from tests.support.consumption import live_service

PLAINTEXT = "sk-upstream-Zq8v2LmX-never-shown"


@pytest.fixture
def client(anonymous: TestClient) -> TestClient:
    """Called as provider "acme" (the test services' provider) unless a test sends other headers."""
    anonymous.headers.update(auth.provider())
    return anonymous


def test_the_credential_is_encrypted_at_rest_and_never_returned_or_logged(
    client: TestClient, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    service_id = live_service()
    path = f"/api/v1/services/{service_id}/credential"
    assert client.get(path).json()["set"] is False
    body = {"scheme": "header", "headerName": "X-Api-Key", "value": PLAINTEXT}
    answers = [client.put(path, json=body), client.get(path), client.get(path, headers=auth.governance())]
    assert [a.status_code for a in answers] == [200, 200, 200]
    shown = answers[1].json()
    assert (shown["set"], shown["scheme"], shown["headerName"], shown["updatedBy"]) == (
        True,
        "header",
        "X-Api-Key",
        "acme",
    )
    answers.append(client.put(path, json={**body, "headerName": "Content-Length"}))  # refused: echoes nothing
    answers.append(client.get(f"/api/v1/audit?serviceId={service_id}", headers=auth.admin()))
    answers.append(client.get(f"/api/v1/services/{service_id}", headers=auth.admin()))

    with session_scope() as session:
        raw = session.execute(text("SELECT ciphertext, key_id FROM service_credentials")).one()
        record = access.load_access(session, "nobody", service_id, box_for(get_settings().consumption))
        trail = session.execute(text("SELECT * FROM audit_log")).all()
    assert PLAINTEXT not in raw.ciphertext and raw.key_id == "dev"
    assert record is not None and record.credential is not None
    assert (record.credential.header_name, record.credential.header_value) == ("X-Api-Key", PLAINTEXT)
    assert PLAINTEXT not in repr(record)
    assert all(PLAINTEXT not in a.text for a in answers), "no response shows it"
    assert PLAINTEXT not in str(trail), "nor the audit trail"
    out, err = capfd.readouterr()
    assert PLAINTEXT not in caplog.text + out + err, "nor any log line"
    assert answers[3].status_code == 422


def test_who_may_set_and_see_the_credential(client: TestClient) -> None:
    service_id = live_service()
    path = f"/api/v1/services/{service_id}/credential"
    body = {"scheme": "bearer", "value": "t0ken"}
    assert client.put(path, json=body, headers=auth.provider("other")).status_code == 403
    assert client.put(path, json=body, headers=auth.consumer()).status_code == 403
    assert client.put(path, json=body, headers=auth.governance()).status_code == 403
    assert client.get(path, headers=auth.consumer()).status_code == 403
    assert client.put(path, json=body, headers=auth.admin()).json()["headerName"] == "Authorization"
    bad = client.put(path, json={"scheme": "bearer", "headerName": "X-Key", "value": "v"})
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["pointer"] == "/headerName"
    assert client.put(path, json={"scheme": "header", "value": "v"}).status_code == 422
    assert client.put(path, json={"scheme": "basic", "value": "v"}).status_code == 422
    with session_scope() as session:
        record = access.load_access(session, "x", service_id, box_for(get_settings().consumption))
    assert record is not None and record.credential is not None
    assert record.credential.header_value == "Bearer t0ken"
    assert client.delete(path).status_code == 204
    assert client.get(path).json()["set"] is False
    assert client.delete(path).status_code == 404


def test_the_signing_secret_is_shown_once_to_its_owner_and_rotates_with_grace(client: TestClient) -> None:
    service_id = live_service()
    path = f"/api/v1/services/{service_id}/signing-secret"
    assert client.post(path, headers=auth.admin()).status_code == 403, "the provider's alone"
    assert client.post(path, headers=auth.provider("other")).status_code == 403
    first = client.post(path)
    assert first.status_code == 201 and first.headers["cache-control"] == "no-store"
    secret = first.json()["secret"]
    assert secret.startswith("mks_")
    again = client.post(path)
    assert again.status_code == 409 and "rotate" in again.json()["error"]["message"]
    assert secret not in client.get(path).text
    with session_scope() as session:
        assert secret not in str(session.execute(text("SELECT * FROM signing_secrets")).all())

    rotated = client.post(f"{path}/rotation", json={"graceSeconds": 3600})
    assert rotated.status_code == 201
    new_secret = rotated.json()["secret"]
    assert new_secret != secret and rotated.json()["previousValidUntil"] is not None
    status = client.get(path, headers=auth.governance()).json()["items"]
    assert [s["expiresAt"] is None for s in status] == [True, False]

    with session_scope() as session:
        live = credentials.live_signing_secrets(
            session, service_id, box_for(get_settings().consumption), datetime.now(UTC)
        )
    assert live == [new_secret, secret], "the gateway signs with both during the grace time"
    call = {"method": "POST", "path": "/v1/chat", "consumer_id": "alice", "request_id": "r-1"}
    header = sign(live, timestamp=int(time.time()), **call)
    verify(header, [secret], now=time.time(), **call)  # a provider still on the old secret
    verify(header, [new_secret], now=time.time(), **call)  # and one that switched

    assert client.post(f"{path}/rotation", json={"graceSeconds": 10**9}).status_code == 422
    client.post(f"{path}/rotation", json={"graceSeconds": 0})
    with session_scope() as session:
        assert (
            len(
                credentials.live_signing_secrets(
                    session, service_id, box_for(get_settings().consumption), datetime.now(UTC)
                )
            )
            == 2
        )
