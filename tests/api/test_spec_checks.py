"""What the API refuses before anything is stored or started (api/spec_checks.py), over HTTP:
endpoints on non-public hosts, unknown fields in an update, and cut error lists, which say how
many errors there were in all."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.settings import get_settings
from storage.database import session_scope
from storage.repositories import services, versions
from storage.repositories.services import Actor
from tests.support import auth
from tests.support.app import reconfigure
from tests.support.secrets import TEST_ENCRYPTION_KEY, TEST_PEPPER
from tests.support.specs import make_spec

SERVICES = "/api/v1/services"
NOT_PUBLIC = [
    "https://127.0.0.1/v1",
    "https://127.1:8443/v1",
    "https://2130706433/v1",
    "https://0x7f.1/v1",
    "https://[::1]/v1",
    "https://[::ffff:169.254.169.254]/latest",
    "https://10.0.0.8/v1",
    "https://172.16.0.1/v1",
    "https://192.168.1.1/v1",
    "https://169.254.169.254/latest/meta-data",
    "https://0.0.0.0/v1",
    "https://[fd00::1]/v1",
    "https://[fe80::1%25eth0]/v1",
    "https://localhost/v1",
    "https://LOCALHOST./v1",
    "https://metadata.google.internal/computeMetadata/v1",
]


def live_service(name: str = "acme-chat") -> str:
    """An active service of provider acme, written through the repositories."""
    with session_scope() as session:
        service = services.create_submitted(session, make_spec(name=name), Actor("acme", "provider"))
        service.status = "active"
        for version in versions.for_service(session, service.id):
            version.status = "active"
        return service.id


def stored(client: TestClient) -> tuple[int, int]:
    """How many services and versions acme has."""
    listing = client.get(SERVICES, params={"limit": 100}, headers=auth.provider()).json()
    counts = [client.get(f"{SERVICES}/{s['id']}/versions").json()["total"] for s in listing["items"]]
    return listing["total"], sum(counts)


def refused_endpoint(response: Any, url: str) -> None:
    assert response.status_code == 422, f"{url}: {response.text}"
    error = response.json()["error"]
    assert error["message"] == "the endpoint URL must name a publicly routable host"
    [detail] = error["details"]
    assert (detail["pointer"], detail["code"]) == ("/endpoint/url", "endpoint_url")
    assert "only publicly routable hosts are accepted" in detail["message"]


def test_a_non_public_endpoint_host_is_refused_at_submit(client: TestClient) -> None:
    before = stored(client)
    for i, url in enumerate(NOT_PUBLIC):
        spec = make_spec(name=f"acme-private-{i}", endpoint={"url": url})
        refused_endpoint(client.post(SERVICES, json=spec), url)
    assert stored(client) == before, "nothing stored, no run started"


def test_new_versions_and_updates_to_a_new_version_are_refused_too(client: TestClient) -> None:
    service_id = live_service()
    before = stored(client)
    for url in ("https://169.254.169.254/latest", "https://[::1]/v1", "https://metadata.google.internal/"):
        spec = make_spec(version="1.1.0", endpoint={"url": url})
        refused_endpoint(client.post(f"{SERVICES}/{service_id}/versions", json=spec), url)
        change = {"version": "1.1.0", "endpoint": {"url": url}}
        refused_endpoint(client.put(f"{SERVICES}/{service_id}", json=change), url)
    assert stored(client) == before


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # production refuses SQLite
def test_production_refuses_them_and_accepts_public_hosts(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKETPLACE_ENVIRONMENT", "production")
    monkeypatch.setenv("MARKETPLACE_AUTH__JWT_SECRET", "p" * 40)
    monkeypatch.setenv("MARKETPLACE_CONSUMPTION__KEY_PEPPER", TEST_PEPPER)
    monkeypatch.setenv("MARKETPLACE_CONSUMPTION__ENCRYPTION_KEYS", json.dumps({"t1": TEST_ENCRYPTION_KEY}))
    reconfigure(client)
    assert get_settings().is_production
    headers = auth.provider()  # signed with the production secret
    url = "https://[::ffff:a9fe:a9fe]/latest/meta-data"
    private = make_spec(name="acme-prod", endpoint={"url": url})
    refused_endpoint(client.post(SERVICES, json=private, headers=headers), url)
    public = make_spec(name="acme-prod", endpoint={"url": "https://api.acme.example/v1"})
    assert client.post(SERVICES, json=public, headers=headers).status_code == 202


def test_with_insecure_endpoints_allowed_a_loopback_endpoint_is_accepted(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKETPLACE_ENDPOINT_TESTS__ALLOW_INSECURE_ENDPOINTS", "true")  # as `make up` does
    reconfigure(client)
    response = client.post(SERVICES, json=make_spec(endpoint={"url": "https://127.0.0.1:8443/v1"}))
    assert response.status_code == 202, response.text


# --- unknown fields in an update ---------------------------------------------------------------------


def test_an_update_naming_no_field_of_a_spec_says_so(client: TestClient) -> None:
    service_id = live_service()
    response = client.put(f"{SERVICES}/{service_id}", json={"descripton": "typo", "tags": ["x"], "a/b": 1})
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "validation_failed",
        "message": "the update has 2 unknown field(s)",
        "details": [
            {
                "pointer": "/descripton",
                "message": "'descripton' is not a field of a service spec; did you mean 'description'?",
                "code": "unknown_field",
            },
            {"pointer": "/a~1b", "message": "'a/b' is not a field of a service spec", "code": "unknown_field"},
        ],
    }
    assert client.get(f"{SERVICES}/{service_id}").json()["tags"] == ["chat", "english"], "nothing changed"


def test_an_update_with_many_unknown_fields_lists_the_first_and_counts_them_all(client: TestClient) -> None:
    service_id = live_service()
    response = client.put(f"{SERVICES}/{service_id}", json={f"x{i}": i for i in range(150)})
    error = response.json()["error"]
    assert (response.status_code, error["total"], len(error["details"])) == (422, 150, 100)
    assert error["message"] == "the update has 150 unknown field(s); the first 100 are listed"


# --- cut error lists ----------------------------------------------------------------------------------


def test_a_cut_error_list_says_how_many_errors_there_were(client: TestClient) -> None:
    spec = make_spec()
    spec["provider"] |= {f"x{i:03}": i for i in range(250)}
    error = client.post(SERVICES, json=spec).json()["error"]
    assert error["message"] == "the service spec has 250 error(s); the first 100 are listed"
    assert error["total"] == 250
    assert [d["pointer"] for d in error["details"]] == [f"/provider/x{i:03}" for i in range(100)]


def test_a_complete_error_list_has_no_total(client: TestClient) -> None:
    error = client.post(SERVICES, json=make_spec(category="poetry")).json()["error"]
    assert error["message"] == "the service spec has 1 error(s)"
    assert "total" not in error
