"""Deprecation with its grace period, retirement, reinstatement, new versions and updates."""

from __future__ import annotations

from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient

from deployments.stack import Stack
from tests.e2e.conftest import GRACE, eventually
from tests.support.provider import FakeProvider, good_spec
from tests.support.registry import FakeRegistry

pytestmark = pytest.mark.e2e
Wait = Callable[..., dict[str, Any]]


def publish_active(api: httpx.Client, wait: Wait, provider_url: str, name: str) -> str:
    response = api.post("/api/v1/services", json=good_spec(provider_url, name=name))
    assert response.status_code == 202, response.text
    service_id = str(response.json()["serviceId"])
    assert wait(service_id)["status"] == "active"
    return service_id


def service(api: httpx.Client, service_id: str) -> httpx.Response:
    return api.get(f"/api/v1/services/{service_id}")


def test_deprecation_then_retirement_after_the_grace_period(
    api: httpx.Client, wait_until_settled: Wait, e2e_stack: Stack
) -> None:
    with FakeProvider() as provider:
        service_id = publish_active(api, wait_until_settled, provider.url, "e2e-retire")
    accepted = api.delete(f"/api/v1/services/{service_id}")
    assert accepted.status_code == 202
    assert accepted.json()["graceSeconds"] == GRACE
    deprecated = eventually(
        lambda: (r := service(api, service_id)).json()["status"] == "deprecated" and r, 60, "deprecated"
    )
    body = deprecated.json()
    assert deprecated.headers["Deprecation"].startswith("@")
    sunset = parsedate_to_datetime(deprecated.headers["Sunset"])
    assert abs(sunset.timestamp() - int(deprecated.headers["Deprecation"][1:]) - GRACE) <= 1
    assert body["sunsetAt"] is not None, "the sunset is set in the deprecation's own transaction"
    run_id = eventually(lambda: service(api, service_id).json()["retirementFlowRunId"], 60, "retirement scheduled")
    with SyncPrefectClient(e2e_stack.config.prefect_api_url) as prefect:
        retirement = prefect.read_flow_run(UUID(run_id))
    assert retirement.state is not None
    assert retirement.state.type.value == "SCHEDULED"

    retired = eventually(
        lambda: (r := service(api, service_id).json())["status"] == "retired" and r, GRACE + 60, "retired"
    )
    assert retired["archivedAt"] is not None
    assert "Deprecation" not in service(api, service_id).headers
    history = api.get(f"/api/v1/services/{service_id}/history", params={"limit": 100}).json()["items"]
    moves = [(h["fromStatus"], h["toStatus"]) for h in history if h["action"] == "status_changed"]
    assert moves[-2:] == [("active", "deprecated"), ("deprecated", "retired")]
    assert history[-1]["flowRunId"] == run_id


def test_reinstating_before_the_sunset_cancels_the_retirement(
    api: httpx.Client, wait_until_settled: Wait, e2e_stack: Stack
) -> None:
    with FakeProvider() as provider:
        service_id = publish_active(api, wait_until_settled, provider.url, "e2e-reinstate")
    assert api.delete(f"/api/v1/services/{service_id}").status_code == 202
    run_id = eventually(lambda: service(api, service_id).json()["retirementFlowRunId"], 60, "retirement scheduled")
    reinstated = api.delete(f"/api/v1/services/{service_id}/deprecation")
    assert reinstated.status_code == 200, reinstated.text
    assert reinstated.json()["status"] == "active"
    assert reinstated.json()["sunsetAt"] is None
    with SyncPrefectClient(e2e_stack.config.prefect_api_url) as prefect:
        run = prefect.read_flow_run(UUID(run_id))
    assert run.state is not None
    assert run.state.type.value == "CANCELLED"
    assert service(api, service_id).json()["status"] == "active"
    assert "Deprecation" not in service(api, service_id).headers


def test_new_version_replaces_the_old_only_once_active(
    api: httpx.Client, wait_until_settled: Wait, registry: FakeRegistry
) -> None:
    with FakeProvider("slow", delay_ms=300) as provider:
        service_id = publish_active(api, wait_until_settled, provider.url, "e2e-versions")
        spec = good_spec(provider.url, name="e2e-versions", version="1.1.0")
        spec["description"] = "faster and cheaper"
        accepted = api.post(f"/api/v1/services/{service_id}/versions", json=spec)
        assert accepted.status_code == 202, accepted.text
        during = service(api, service_id).json()
        assert (during["status"], during["version"]) == ("active", "1.0.0"), "the old version keeps serving"
        report = wait_until_settled(service_id, status="active")
        eventually(lambda: service(api, service_id).json()["version"] == "1.1.0", 60, "the new version live")
    assert report["versionStatus"] in ("testing", "validating", "submitted", "active")
    live = service(api, service_id).json()
    assert (live["status"], live["version"], live["description"]) == ("active", "1.1.0", "faster and cheaper")
    listing = api.get(f"/api/v1/services/{service_id}/versions").json()
    assert [(v["version"], v["status"]) for v in listing["items"]] == [("1.0.0", "superseded"), ("1.1.0", "active")]
    assert live["registryId"] in registry.entries

    older = api.post(
        f"/api/v1/services/{service_id}/versions",
        json=good_spec("https://x.example", name="e2e-versions", version="1.0.5"),
    )
    assert older.status_code == 422
    assert older.json()["error"]["details"][0]["pointer"] == "/version"


def test_metadata_update_is_audited_and_synced_to_the_registry(
    api: httpx.Client, wait_until_settled: Wait, registry: FakeRegistry
) -> None:
    with FakeProvider() as provider:
        service_id = publish_active(api, wait_until_settled, provider.url, "e2e-update")
    updated = api.put(f"/api/v1/services/{service_id}", json={"description": "now with tools", "tags": ["tools"]})
    assert updated.status_code == 200, updated.text
    assert (updated.json()["description"], updated.json()["tags"]) == ("now with tools", ["tools"])
    registry_id = updated.json()["registryId"]
    eventually(
        lambda: registry.entries[registry_id]["metadata"].get("description") == "now with tools",
        60,
        "the registry entry updated",
    )
    history = api.get(f"/api/v1/services/{service_id}/history", params={"limit": 100}).json()["items"]
    change = next(h for h in history if h["action"] == "metadata_updated")
    assert change["after"] == {"description": "now with tools", "tags": ["tools"]}
    assert change["before"] == {
        "description": "Fake chat model served by tests.support.provider.FakeProvider",
        "tags": ["chat", "test"],
    }

    breaking = api.put(f"/api/v1/services/{service_id}", json={"sla": {"availability": 90, "maxLatencyMs": 100}})
    assert breaking.status_code == 422
    assert any(d["code"] == "sla-minimum-availability" for d in breaking.json()["error"]["details"])
    assert service(api, service_id).json()["spec"]["sla"]["availability"] != 90
