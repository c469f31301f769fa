"""Publishing through the running stack: a good spec reaches `active`, bad ones fail at the right phase."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.realtime import policy_of
from deployments.stack import Stack
from tests.support.provider import FakeProvider, good_spec
from tests.support.registry import FakeRegistry

pytestmark = pytest.mark.e2e
Wait = Callable[..., dict[str, Any]]


def submit(api: httpx.Client, spec: dict[str, Any]) -> str:
    response = api.post("/api/v1/services", json=spec)
    assert response.status_code == 202, response.text
    return str(response.json()["serviceId"])


def test_good_spec_reaches_active(api: httpx.Client, wait_until_settled: Wait, registry: FakeRegistry) -> None:
    with FakeProvider() as provider:
        service_id = submit(api, good_spec(provider.url, name="e2e-good"))
        status = wait_until_settled(service_id)
        assert provider.requests["GET /health"] >= 1
        assert provider.requests["POST /"] >= 1
    assert status["status"] == "active", status
    assert status["flowRun"]["state"] == "COMPLETED"
    assert status["publishedAt"] is not None
    assert status["failure"] is None
    phases = {(p["phase"], p["check"]): p for p in status["phases"]}
    for phase in ("metadata_validation", "openapi_validation", "policy_compliance", "registry_sync", "activation"):
        assert phases[(phase, None)]["outcome"] == "passed"
        assert phases[(phase, None)]["durationMs"] >= 0
    for check in ("health", "auth", "conformance", "security", "latency"):
        assert phases[("endpoint_tests", check)]["outcome"] == "passed"
    service = api.get(f"/api/v1/services/{service_id}").json()
    assert service["status"] == "active"
    assert service["registryId"] in registry.entries
    assert registry.entries[service["registryId"]]["metadata"]["marketplaceId"] == service_id
    assert api.get("/api/v1/services", params={"status": "active"}).json()["total"] >= 1


def _bad_semver(spec: dict[str, Any]) -> None:
    spec["version"] = "1.0"


def _invalid_openapi(spec: dict[str, Any]) -> None:
    spec["openApiSpec"]["paths"]["/health"]["get"]["responses"] = {"200": {"content": "not-an-object"}}


def _plain_http_public_host(spec: dict[str, Any]) -> None:
    spec["endpoint"]["url"] = "http://provider.example.com/v1"


@pytest.mark.parametrize(
    ("mutate", "mode", "phase", "reason"),
    [
        (_bad_semver, "healthy", "metadata_validation", "semantic version"),
        (_invalid_openapi, "healthy", "openapi_validation", "openapi_validation failed"),
        (_plain_http_public_host, "healthy", "policy_compliance", "https-required"),
        (None, "health_500", "endpoint_tests", "500"),
    ],
    ids=["bad-semver", "invalid-openapi", "https-policy", "endpoint-500"],
)
def test_bad_specs_fail_at_their_phase(
    api: httpx.Client, wait_until_settled: Wait, registry: FakeRegistry, mutate: Any, mode: Any, phase: str, reason: str
) -> None:
    with FakeProvider(mode) as provider:
        spec = copy.deepcopy(good_spec(provider.url, name=f"e2e-{phase}"))
        if mutate:
            mutate(spec)
        service_id = submit(api, spec)
        status = wait_until_settled(service_id)
    assert status["status"] == "failed", status
    assert status["flowRun"]["state"] == "FAILED"
    assert status["failure"]["phase"] == phase
    assert reason in status["failure"]["reason"]
    assert status["errors"], "the status report lists the errors"
    failed = [p for p in status["phases"] if p["outcome"] == "failed"]
    assert failed
    assert failed[0]["phase"] == phase
    if phase == "policy_compliance":
        assert [v["code"] for v in status["violations"]] == ["https-required"]
        assert status["violations"][0]["severity"] == "critical"
        assert status["violations"][0]["remediation"]
    service = api.get(f"/api/v1/services/{service_id}").json()
    assert service["registryId"] is None
    assert not any(e["metadata"]["marketplaceId"] == service_id for e in registry.entries.values())


def test_the_apis_threads_run_at_real_time_priority(
    api: httpx.Client, e2e_stack: Stack, wait_until_settled: Wait
) -> None:
    """Status reads are picked up at once while batch work fills the cores (core/realtime.py): every
    thread of the API, those its thread pool started for a publication too (they share the GIL)."""
    with FakeProvider() as provider:
        wait_until_settled(submit(api, good_spec(provider.url, name="e2e-realtime")))  # the thread pool has worked
    pid = next(proc.pid for name, proc in e2e_stack.processes if name == "api")
    threads = {int(tid.name): policy_of(int(tid.name)) for tid in Path(f"/proc/{pid}/task").iterdir()}
    assert len(threads) > 1, "the API has started threads"
    assert set(threads.values()) == {os.SCHED_RR}, threads
