"""The publish flow end to end in one process: phases, lifecycle, compensation."""

from __future__ import annotations

from typing import Any

import pytest

from flows.publish import publish_service
from storage.database import reset_engine, session_scope
from storage.repositories import audit, outbox, phases, services, versions
from storage.repositories.services import Actor
from storage.search import SearchQuery, get_search_index
from tests.support.provider import FakeProvider, good_spec
from tests.support.registry import FakeRegistry

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def submit(spec: dict[str, Any]) -> str:
    with session_scope() as session:
        return services.create_submitted(session, spec, Actor("test", "provider")).id


def publish(service_id: str) -> Any:
    with session_scope() as session:
        version_id = versions.latest(session, service_id).id
    return publish_service(service_id, version_id, return_state=True)


def snapshot(service_id: str) -> dict[str, Any]:
    with session_scope() as session:
        service = services.get(session, service_id)
        return {
            "status": service.status,
            "failure_phase": service.failure_phase,
            "failure_reason": service.failure_reason,
            "registry_id": service.registry_id,
            "phases": [(r.phase, r.check_name, r.outcome) for r in phases.for_service(session, service_id)],
            "audit": [(a.action, a.to_status, a.reason) for a in audit.for_service(session, service_id)],
            "events": [e.event_type for e in outbox.for_aggregate(session, service_id)],
        }


def test_good_spec_becomes_active(flow_env: pytest.MonkeyPatch) -> None:
    with FakeProvider() as provider:
        service_id = submit(good_spec(provider.url))
        state = publish(service_id)
    assert state.is_completed()
    result = snapshot(service_id)
    assert result["status"] == "active"
    assert result["registry_id"] == f"marketplace:{service_id}"
    ran = {(p, c) for p, c, o in result["phases"] if o != "failed"}
    assert {
        ("metadata_validation", None),
        ("openapi_validation", None),
        ("policy_compliance", None),
        ("registry_sync", None),
        ("persistence", None),
        ("endpoint_tests", "health"),
        ("endpoint_tests", "auth"),
        ("endpoint_tests", "conformance"),
        ("endpoint_tests", "security"),
        ("endpoint_tests", "latency"),
        ("activation", None),
    } <= ran
    statuses = [to for action, to, _ in result["audit"] if action == "status_changed"]
    assert statuses == ["validating", "testing", "active"]
    found = get_search_index().search(SearchQuery(text="fake chat"))
    assert [hit.service_id for hit in found.items] == [service_id], "activation indexed the service"
    assert result["events"] == ["service_submitted", "service_published"]


def test_bad_semver_fails_at_validation_without_touching_the_registry(flow_env: pytest.MonkeyPatch) -> None:
    with FakeRegistry() as registry, FakeProvider() as provider:
        flow_env.setenv("MARKETPLACE_REGISTRY__URL", registry.url)
        reset_engine()
        service_id = submit(good_spec(provider.url, version="1.0"))
        state = publish(service_id)
    assert state.is_failed()
    result = snapshot(service_id)
    assert result["status"] == "failed"
    assert result["failure_phase"] == "metadata_validation"
    assert "semantic version" in result["failure_reason"]
    assert registry.calls == []
    assert "rollback_completed" not in result["events"]
    assert result["events"][-1] == "validation_failed"


def test_endpoint_failure_removes_the_registry_entry(flow_env: pytest.MonkeyPatch) -> None:
    with FakeRegistry() as registry, FakeProvider("health_500") as provider:
        flow_env.setenv("MARKETPLACE_REGISTRY__URL", registry.url)
        reset_engine()
        service_id = submit(good_spec(provider.url))
        state = publish(service_id)
    assert state.is_failed()
    result = snapshot(service_id)
    assert result["status"] == "failed"
    assert result["failure_phase"] == "endpoint_tests"
    assert "health" in result["failure_reason"]
    assert "500" in result["failure_reason"]
    assert registry.calls[0] == "POST /api/v1/services"
    assert registry.calls[-1].startswith("DELETE /api/v1/services/reg-")
    assert registry.entries == {}
    assert result["registry_id"] is None
    assert ("rollback", None, "registry entry removed") in result["audit"]
    assert get_search_index().search(SearchQuery(text="fake chat")).total == 0
    assert result["events"][-2:] == ["rollback_completed", "validation_failed"]


def test_a_retried_registry_hiccup_is_not_compensated(flow_env: pytest.MonkeyPatch) -> None:
    """Prefect would roll back an enclosing transaction on the failed first attempt; we must not."""
    with FakeRegistry(fail_first=2) as registry, FakeProvider() as provider:
        flow_env.setenv("MARKETPLACE_REGISTRY__URL", registry.url)
        reset_engine()
        service_id = submit(good_spec(provider.url))
        state = publish(service_id)
    assert state.is_completed()
    result = snapshot(service_id)
    assert result["status"] == "active"
    assert len(registry.entries) == 1
    assert result["registry_id"] in registry.entries
    assert not any(c.startswith("DELETE") for c in registry.calls)


def test_registry_down_fails_the_run_after_retries(flow_env: pytest.MonkeyPatch) -> None:
    with FakeRegistry(always_fail=True) as registry, FakeProvider() as provider:
        flow_env.setenv("MARKETPLACE_REGISTRY__URL", registry.url)
        reset_engine()
        service_id = submit(good_spec(provider.url))
        state = publish(service_id)
    assert state.is_failed()
    result = snapshot(service_id)
    assert result["status"] == "failed"
    assert result["failure_phase"] == "registry_sync"
    assert registry.entries == {}
    # 5 consecutive failures open the circuit: the sixth attempt never reaches the registry
    assert len(registry.calls) == 5
    assert "CircuitBreakerError" in result["failure_reason"]
