"""The publishing API over HTTP (in-process), on SQLite and PostgreSQL, with a real Prefect server."""

from __future__ import annotations

import json
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

from api.app import create_app
from deployments.stack import Stack
from storage.database import reset_engine
from tests.faults.helpers import TcpProxy, eventually
from tests.support import auth
from tests.support.runs import started_run_id, with_started_run
from tests.support.specs import make_spec

SERVICES = "/api/v1/services"


def publish(client: TestClient, **overrides: object) -> dict:
    """Submit, and wait for the run the submission owes to be created."""
    response = client.post(SERVICES, json=make_spec(**overrides))
    assert response.status_code == 202, response.text
    return with_started_run(client, response.json())


def test_publish_answers_202_and_starts_a_flow_run(client: TestClient, prefect_server: Stack) -> None:
    response = client.post(SERVICES, json=make_spec())
    assert response.status_code == 202, response.text
    assert response.json()["flowRunId"] is None, "answered before Prefect was asked"
    body = with_started_run(client, response.json())
    assert body["status"] == "submitted"
    assert body["statusUrl"].endswith(f"/api/v1/services/{body['serviceId']}/status")
    assert response.headers["location"] == body["statusUrl"]
    with SyncPrefectClient(prefect_server.config.prefect_api_url) as prefect:
        run = prefect.read_flow_run(UUID(body["flowRunId"]))
    assert run.parameters["service_id"] == body["serviceId"]
    versions = client.get(f"{SERVICES}/{body['serviceId']}/versions").json()
    assert [(v["version"], v["status"], v["flowRunId"]) for v in versions["items"]] == [
        ("1.0.0", "submitted", body["flowRunId"])
    ]
    assert run.parameters["version_id"] == versions["items"][0]["id"]
    assert run.state is not None and run.state.type.value == "SCHEDULED"

    service = client.get(f"{SERVICES}/{body['serviceId']}").json()
    assert service["status"] == "submitted"
    assert service["flowRunId"] == body["flowRunId"]
    assert service["spec"]["name"] == "acme-chat"
    assert service["createdAt"].endswith(("Z", "+00:00")), "timestamps are UTC-aware on every backend"


def test_every_schema_error_is_reported_with_its_pointer(client: TestClient) -> None:
    spec = make_spec(category="poetry", tags="not-a-list", unexpected=1)
    del spec["endpoint"]["url"]
    spec["sla"]["availability"] = "high"
    response = client.post(SERVICES, json=spec)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_failed"
    pointers = {d["pointer"] for d in error["details"]}
    assert {"/category", "/tags", "/endpoint/url", "/sla/availability"} <= pointers
    assert any(d["code"] == "additionalProperties" for d in error["details"])
    assert client.get(SERVICES).json()["total"] == 0


@pytest.mark.parametrize(
    ("raw", "message"),
    [(b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object"), (b"\xff\xfe{}", "not UTF-8")],
)
def test_unreadable_bodies_get_a_clear_422(client: TestClient, raw: bytes, message: str) -> None:
    response = client.post(SERVICES, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert message in response.json()["error"]["message"]


def test_duplicate_name_and_version_gets_409_and_keeps_the_first(client: TestClient) -> None:
    first = publish(client)
    response = client.post(SERVICES, json=make_spec(description="impostor"))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "duplicate_service"
    listing = client.get(SERVICES).json()
    assert listing["total"] == 1
    assert listing["items"][0]["id"] == first["serviceId"]
    assert listing["items"][0]["description"] == "Acme's general purpose chat model"


def test_oversized_body_gets_413(client: TestClient) -> None:
    spec = make_spec(description="x" * 300_000)
    response = client.post(SERVICES, content=json.dumps(spec), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_list_filters_and_paginates(client: TestClient) -> None:
    for i in range(3):
        publish(client, name=f"svc-{i}", category="embeddings" if i == 0 else "chat")
    page = client.get(SERVICES, params={"category": "chat", "limit": 1}).json()
    assert (page["total"], len(page["items"]), page["limit"]) == (2, 1, 1)
    assert client.get(SERVICES, params={"status": "submitted", "provider": "acme"}).json()["total"] == 3
    assert client.get(SERVICES, params={"status": "active"}).json()["total"] == 0
    bad = client.get(SERVICES, params={"limit": 1000, "status": "bogus"})
    assert bad.status_code == 422
    assert {d["pointer"] for d in bad.json()["error"]["details"]} == {"/query/limit", "/query/status"}


def test_status_reports_lifecycle_and_the_prefect_run(client: TestClient, prefect_server: Stack) -> None:
    body = publish(client, compliance={"level": "restricted", "dataResidency": ["US"]})
    status = client.get(f"{SERVICES}/{body['serviceId']}/status").json()
    assert status["status"] == "submitted"
    assert status["requiresApproval"] is True
    assert status["phases"] == [] and status["failure"] is None
    run = status["flowRun"]
    assert run["id"] == body["flowRunId"]
    assert run["state"] == "SCHEDULED"
    assert run["url"] == f"http://127.0.0.1:{prefect_server.config.prefect_port}/runs/flow-run/{body['flowRunId']}"


def test_unknown_service_gets_404_in_the_error_shape(client: TestClient) -> None:
    for path in ("", "/status"):
        response = client.get(f"{SERVICES}/00000000-0000-0000-0000-000000000000{path}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


def test_health_ready_schema_and_docs(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "healthy"
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "prefect": "ok"}
    schema = client.get("/api/v1/schemas/service-spec").json()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/services", "/api/v1/services/{service_id}/status", "/health", "/ready"} <= set(paths)


def test_while_prefect_is_down_submissions_are_accepted_and_started_when_it_is_back(
    database_url: str, prefect_server: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Durable intake: 202 at once, the run queued (attempts and the reason shown), a duplicate still 409;
    the run is created exactly once when Prefect answers again."""
    gate = TcpProxy(prefect_server.config.prefect_port)  # closed until started: Prefect is "down"
    monkeypatch.setenv("MARKETPLACE_PREFECT__API_URL", f"http://127.0.0.1:{gate.port}/api")
    monkeypatch.setenv("MARKETPLACE_PREFECT__REQUEST_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("MARKETPLACE_PREFECT__START_MAX_RETRY_SECONDS", "0.5")
    monkeypatch.setenv("MARKETPLACE_RATE_LIMIT__PUBLISH_LIMIT", "100000")
    reset_engine()
    with TestClient(create_app(), headers=auth.provider()) as client:
        response = client.post(SERVICES, json=make_spec())
        assert response.status_code == 202, response.text
        service_id = response.json()["serviceId"]
        assert client.post(SERVICES, json=make_spec()).status_code == 409, "a duplicate is refused at once"
        run = eventually(lambda: _queued_after_retries(client, service_id), 20, "retried starts")
        assert (run["id"], run["url"]) == (None, None)
        assert "unavailable" in run["lastStartError"]
        ready = client.get("/ready")
        assert ready.status_code == 200, "submissions are still taken"
        assert ready.json()["checks"]["prefect"] == "unavailable"
        with gate:
            flow_run_id = started_run_id(client, service_id)
            with SyncPrefectClient(prefect_server.config.prefect_api_url) as prefect:
                runs = prefect.read_flow_runs(
                    flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"service:{service_id}"]))
                )
        assert [str(r.id) for r in runs] == [flow_run_id], "one run, whatever the retries"
        assert runs[0].name == "publish acme/acme-chat 1.0.0"
        assert client.get(SERVICES).json()["total"] == 1


def _queued_after_retries(client: TestClient, service_id: str) -> dict | None:
    run = client.get(f"{SERVICES}/{service_id}/status").json()["flowRun"]
    return run if run["state"] == "QUEUED" and run["startAttempts"] >= 2 else None


def test_a_change_is_visible_on_the_next_read_despite_the_cache(client: TestClient) -> None:
    from storage.database import session_scope
    from storage.repositories import services

    body = publish(client)
    url = f"{SERVICES}/{body['serviceId']}"
    assert client.get(url).json()["description"] == "Acme's general purpose chat model"
    assert client.get(url).json()["description"] == "Acme's general purpose chat model"  # a cache hit
    with session_scope() as session:
        services.get(session, body["serviceId"]).description = "rewritten"
    assert client.get(url).json()["description"] == "rewritten"
