"""Every list the API answers has one envelope, {"items", "total", "offset", "limit"} (extras such
as search's facets beside it), and is paged with `offset`/`limit` (the audit trail with longer
pages): api/schemas.py Page, over HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from api.publishing import refresh_search_entry
from storage.database import session_scope
from storage.repositories import approvals, audit, services, versions
from storage.repositories.services import SYSTEM
from tests.support import auth
from tests.support.runs import with_started_run
from tests.support.specs import make_spec

SERVICES = "/api/v1/services"
ENVELOPE = {"items", "total", "offset", "limit"}


def submit(client: TestClient, name: str) -> dict[str, Any]:
    """Submit, and wait for the run the submission owes to be created."""
    response = client.post(SERVICES, json=make_spec(name=name), headers=auth.provider())
    assert response.status_code == 202, response.text
    return with_started_run(client, response.json())


def make_live(service_id: str) -> None:
    with session_scope() as session:
        service = services.get(session, service_id)
        service.status = "active"
        for version in versions.for_service(session, service_id):
            version.status = "active"
    refresh_search_entry(service_id)


def test_every_list_answers_the_one_envelope(client: TestClient) -> None:
    service_id = submit(client, "acme-envelope")["serviceId"]
    make_live(service_id)
    consumer = auth.consumer()
    hook = {"callbackUrl": "https://hooks.example/news"}
    assert client.post(f"{SERVICES}/{service_id}/subscriptions", json=hook, headers=consumer).status_code == 201
    admin = auth.admin()
    SEARCH_EXTRAS = {"facets", "totalApproximate", "rankingApproximate", "ranked"}
    lists = {
        "services": (client.get(SERVICES, headers=admin), set()),
        "search": (client.post(f"{SERVICES}/search", json={"query": "envelope"}), SEARCH_EXTRAS),
        "approvals": (client.get("/api/v1/approvals", headers=admin), set()),
        "history": (client.get(f"{SERVICES}/{service_id}/history", headers=admin), {"serviceId"}),
        "versions": (client.get(f"{SERVICES}/{service_id}/versions", headers=admin), {"serviceId", "currentVersion"}),
        "events": (client.get("/api/v1/events", headers=admin), set()),
        "deliveries": (client.get("/api/v1/webhooks/deliveries", headers=admin), set()),
        "audit": (client.get("/api/v1/audit", headers=admin), set()),
        "subscriptions": (client.get(f"{SERVICES}/{service_id}/subscriptions", headers=consumer), {"serviceId"}),
    }
    for name, (response, extras) in lists.items():
        assert response.status_code == 200, f"{name}: {response.text}"
        body = response.json()
        assert set(body) == ENVELOPE | extras, name
        assert (body["offset"], body["limit"]) == (0, 50 if name == "audit" else 20), name
        assert body["total"] == len(body["items"]), name
    assert lists["search"][0].json()["total"] == 1
    assert lists["history"][0].json()["total"] == 1


def test_history_is_paged_oldest_first(client: TestClient) -> None:
    service_id = submit(client, "acme-history")["serviceId"]
    with session_scope() as session:
        for i in range(24):
            audit.append(session, service_id=service_id, action="noted", actor="ops", reason=f"note {i}")
    page = client.get(f"{SERVICES}/{service_id}/history", params={"offset": 20, "limit": 10}).json()
    assert (page["total"], page["offset"], page["limit"]) == (25, 20, 10)
    assert [h["reason"] for h in page["items"]] == [f"note {i}" for i in range(19, 24)]
    first = client.get(f"{SERVICES}/{service_id}/history").json()
    assert (len(first["items"]), first["items"][0]["action"]) == (20, "submitted")
    for bad in ({"limit": 0}, {"limit": 101}, {"offset": -1}):
        response = client.get(f"{SERVICES}/{service_id}/history", params=bad)
        assert response.status_code == 422, bad
        assert response.json()["error"]["details"][0]["pointer"] == f"/query/{next(iter(bad))}"


def test_the_approval_queue_is_paged_with_its_total(client: TestClient) -> None:
    waiting = []
    for i in range(3):
        accepted = submit(client, f"acme-queue-{i}")
        with session_scope() as session:
            version = versions.for_service(session, accepted["serviceId"])[0]
            approvals.request(session, accepted["serviceId"], version.id, accepted["flowRunId"], 3600)
        waiting.append(accepted["serviceId"])
    governance = auth.governance()
    first = client.get("/api/v1/approvals", params={"limit": 2}, headers=governance).json()
    rest = client.get("/api/v1/approvals", params={"offset": 2, "limit": 2}, headers=governance).json()
    assert (first["total"], rest["total"], first["limit"], rest["offset"]) == (3, 3, 2, 2)
    assert [a["serviceId"] for a in first["items"] + rest["items"]] == waiting, "oldest request first"
    approved = client.get("/api/v1/approvals", params={"status": "approved"}, headers=governance).json()
    assert (approved["total"], approved["items"]) == (0, [])
    assert client.get("/api/v1/approvals", params={"limit": 101}, headers=governance).status_code == 422


def test_versions_and_subscriptions_are_paged(client: TestClient) -> None:
    service_id = submit(client, "acme-versions")["serviceId"]
    make_live(service_id)
    with session_scope() as session:
        for minor in (1, 2):
            spec = make_spec(name="acme-versions", version=f"1.{minor}.0")
            versions.create_next(session, services.get(session, service_id), spec, SYSTEM)
    page = client.get(f"{SERVICES}/{service_id}/versions", params={"offset": 1, "limit": 1}).json()
    assert (page["total"], [v["version"] for v in page["items"]], page["currentVersion"]) == (3, ["1.1.0"], "1.0.0")

    consumer = auth.consumer()
    for hook in ("a", "b", "c"):
        body = {"callbackUrl": f"https://hooks.example/{hook}"}
        assert client.post(f"{SERVICES}/{service_id}/subscriptions", json=body, headers=consumer).status_code == 201
    page = client.get(f"{SERVICES}/{service_id}/subscriptions", params={"offset": 1, "limit": 5}, headers=consumer)
    body = page.json()
    assert (body["total"], [s["callbackUrl"] for s in body["items"]]) == (
        3,
        ["https://hooks.example/b", "https://hooks.example/c"],
    )
