"""Human approval through the running stack: resumed from our API and from the Prefect UI's API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from deployments.stack import Stack
from tests.e2e.conftest import APPROVAL_TIMEOUT, eventually
from tests.support.provider import FakeProvider, good_spec
from tests.support.registry import FakeRegistry

pytestmark = pytest.mark.e2e
Wait = Callable[..., dict[str, Any]]


def confidential_spec(provider_url: str, name: str) -> dict[str, Any]:
    spec = good_spec(provider_url, name=name)
    spec["compliance"]["level"] = "confidential"
    return spec


def submit(api: httpx.Client, spec: dict[str, Any]) -> str:
    response = api.post("/api/v1/services", json=spec)
    assert response.status_code == 202, response.text
    return str(response.json()["serviceId"])


def registered(registry: FakeRegistry, service_id: str) -> list[str]:
    return [k for k, v in registry.entries.items() if v["metadata"]["marketplaceId"] == service_id]


def task_states(stack: Stack, flow_run_id: str) -> dict[str, list[str]]:
    """Task runs of a flow run by task name, with their state names (e.g. Completed, Cached)."""
    with SyncPrefectClient(stack.config.prefect_api_url) as prefect:
        runs = prefect.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)])), limit=200
        )
    states: dict[str, list[str]] = {}
    for run in runs:
        states.setdefault(run.name.rsplit("-", 1)[0], []).append(run.state.name if run.state else "?")
    return states


def test_approved_from_our_api_goes_active_without_redoing_work(
    api: httpx.Client, wait_until_settled: Wait, registry: FakeRegistry, governance: dict[str, str], e2e_stack: Stack
) -> None:
    with FakeProvider() as provider:
        service_id = submit(api, confidential_spec(provider.url, "e2e-approve"))
        waiting = wait_until_settled(service_id)
        assert waiting["status"] == "pending_approval", waiting
        assert waiting["flowRun"]["state"] == "PAUSED", "suspended: no process is held"
        probes_before = dict(provider.requests)

        queue = api.get("/api/v1/approvals", headers=governance).json()["items"]
        entry = next(a for a in queue if a["serviceId"] == service_id)
        assert entry["status"] == "pending"
        assert {p["phase"] for p in entry["phases"]} >= {"metadata_validation", "policy_compliance", "endpoint_tests"}

        decision = {"decision": "approve", "comment": "reviewed the DPA"}
        accepted = api.post(f"/api/v1/approvals/{service_id}", json=decision, headers=governance)
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["reviewer"] == "grace-governance"
        done = wait_until_settled(service_id, status="active")
        assert dict(provider.requests) == probes_before, "endpoint tests were not run again after the resume"

    assert len(registered(registry, service_id)) == 1
    assert sum(c == "POST /api/v1/services" for c in registry.calls) >= 1

    # Prefect's services record task runs from their events in batches, a second or so after the run.
    def resumed_run_recorded() -> dict[str, list[str]] | None:
        states = task_states(e2e_stack, done["flowRun"]["id"])
        return states if "Cached" in states.get("registry-sync", []) else None

    states = eventually(resumed_run_recorded, 15, "the resumed run's registry-sync task run recorded as Cached")
    assert states["registry-sync"].count("Completed") == 1, "registered once, then read from the persisted result"
    history = api.get(f"/api/v1/services/{service_id}/history", params={"limit": 100}).json()["items"]
    decided = [h for h in history if h["action"] == "approval_decided"]
    assert [(h["actor"], h["reason"]) for h in decided] == [("grace-governance", "reviewed the DPA")]
    again = api.post(f"/api/v1/approvals/{service_id}", json=decision, headers=governance)
    assert again.status_code == 409


def test_rejected_from_the_prefect_ui_fails_and_compensates(
    api: httpx.Client, wait_until_settled: Wait, registry: FakeRegistry, e2e_stack: Stack
) -> None:
    with FakeProvider() as provider:
        service_id = submit(api, confidential_spec(provider.url, "e2e-reject"))
        waiting = wait_until_settled(service_id)
        assert waiting["status"] == "pending_approval", waiting
        assert len(registered(registry, service_id)) == 1
        # The Prefect UI's Resume form posts the run input to this endpoint.
        with SyncPrefectClient(e2e_stack.config.prefect_api_url) as prefect:
            run_input = {"decision": "reject", "reviewer": "ui-reviewer", "comment": "no DPA on file"}
            result = prefect.resume_flow_run(UUID(waiting["flowRun"]["id"]), run_input=run_input)
        assert result.status.value == "ACCEPT"
        failed = wait_until_settled(service_id, status="failed")
    assert failed["failure"] == {"phase": "approval", "reason": "rejected by ui-reviewer: no DPA on file"}
    assert registered(registry, service_id) == []
    actions = [
        h["action"] for h in api.get(f"/api/v1/services/{service_id}/history", params={"limit": 100}).json()["items"]
    ]
    assert "approval_decided" in actions
    assert "rollback_completed" in actions


def test_unanswered_approval_times_out_into_failed(
    api: httpx.Client, wait_until_settled: Wait, registry: FakeRegistry, governance: dict[str, str]
) -> None:
    with FakeProvider() as provider:
        service_id = submit(api, confidential_spec(provider.url, "e2e-expire"))
        assert wait_until_settled(service_id)["status"] == "pending_approval"
        failed = wait_until_settled(service_id, timeout=APPROVAL_TIMEOUT + 60, status="failed")
    assert failed["failure"]["reason"] == "approval timed out"
    assert registered(registry, service_id) == []
    expired = api.get("/api/v1/approvals", params={"status": "expired"}, headers=governance).json()["items"]
    assert service_id in [a["serviceId"] for a in expired]
    late = api.post(f"/api/v1/approvals/{service_id}", json={"decision": "approve"}, headers=governance)
    assert late.status_code == 409
