"""The external registry answering 503: retries, the circuit opening and closing, compensation.

The circuit breaker lives in the process that calls the registry, and the process worker runs
each publication in its own process: a breaker's whole life (closed, open, half-open, closed)
is shown on the client against a failing registry, and in the stack within one run, where the
task's attempts that met the open circuit never reached the registry.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pybreaker
import pytest

from core.settings import RegistrySettings
from deployments.stack import Stack
from tasks.registry import RegistryClient
from tests.faults.conftest import FAILURE_THRESHOLD, RESET_TIMEOUT, as_provider, snapshot, task_runs, wait_settled
from tests.faults.helpers import eventually
from tests.support.provider import FakeProvider, good_spec
from tests.support.registry import FakeRegistry
from tests.support.runs import started_run_id
from tests.support.specs import make_spec

RESET = 0.5


@pytest.fixture
def failing() -> Iterator[FakeRegistry]:
    with FakeRegistry(always_fail=True) as fake:
        yield fake


def client(registry: FakeRegistry) -> RegistryClient:
    """A client with its own breaker (one per registry URL, and each fake has its own port)."""
    settings = RegistrySettings(url=registry.url, timeout_seconds=2, failure_threshold=3, reset_timeout_seconds=RESET)
    return RegistryClient(settings)


def test_the_circuit_opens_after_the_threshold_and_closes_after_a_trial_call(failing: FakeRegistry) -> None:
    registry = client(failing)
    for _ in range(3):
        with pytest.raises((httpx.HTTPStatusError, pybreaker.CircuitBreakerError)):
            registry.register("svc-1", make_spec())
    assert registry._breaker.current_state == pybreaker.STATE_OPEN
    assert failing.count("POST") == 3
    with pytest.raises(pybreaker.CircuitBreakerError):
        registry.register("svc-1", make_spec())
    assert failing.count("POST") == 3, "an open circuit does not call the registry"
    failing.heal()
    time.sleep(RESET + 0.1)
    assert registry.register("svc-1", make_spec()).startswith("reg-"), "the half-open trial goes through"
    assert registry._breaker.current_state == pybreaker.STATE_CLOSED
    assert failing.count("POST") == 4


def test_a_failed_trial_call_opens_the_circuit_again(failing: FakeRegistry) -> None:
    registry = client(failing)
    for _ in range(3):
        with pytest.raises((httpx.HTTPStatusError, pybreaker.CircuitBreakerError)):
            registry.register("svc-1", make_spec())
    time.sleep(RESET + 0.1)
    with pytest.raises((httpx.HTTPStatusError, pybreaker.CircuitBreakerError)):
        registry.register("svc-1", make_spec())
    assert failing.count("POST") == 4, "one trial call only"
    assert registry._breaker.current_state == pybreaker.STATE_OPEN
    with pytest.raises(pybreaker.CircuitBreakerError):
        registry.register("svc-1", make_spec())
    assert failing.count("POST") == 4


def test_compensation_waits_out_an_open_circuit(failing: FakeRegistry) -> None:
    healthy = client(failing)
    failing.heal()
    entry = healthy.register("svc-1", make_spec())
    failing.outage()
    for _ in range(3):
        with pytest.raises((httpx.HTTPStatusError, pybreaker.CircuitBreakerError)):
            healthy.deregister(entry)
    with pytest.raises(pybreaker.CircuitBreakerError):
        healthy.deregister(entry)  # the forward path fails fast
    failing.heal()
    t0 = time.monotonic()
    healthy.deregister(entry, wait_if_open=True)
    waited = time.monotonic() - t0
    assert waited <= RESET + 0.5
    assert failing.entries == {}
    assert healthy._breaker.current_state == pybreaker.STATE_CLOSED


@pytest.mark.e2e
def test_registry_down_during_registration_fails_the_run_and_a_later_publish_succeeds(
    api: httpx.Client, faults_stack: Stack, registry: FakeRegistry, app_db: str
) -> None:
    registry.outage()
    with FakeProvider() as provider:
        spec = good_spec(provider.url, name="faults-registry-down")
        headers = as_provider(spec)
        accepted = api.post("/api/v1/services", json=spec, headers=headers)
        assert accepted.status_code == 202, accepted.text
        service_id = accepted.json()["serviceId"]
        flow_run_id = started_run_id(api, service_id, headers)
        report = wait_settled(api, service_id, headers)
        assert report["status"] == "failed"
        assert report["failure"]["phase"] == "registry_sync"
        assert "CircuitBreakerError" in report["failure"]["reason"]
        attempts = task_runs(faults_stack, flow_run_id, "registry-sync")[0].run_count
        assert attempts == 6, "registry-sync: 5 retries"
        assert registry.count("POST") == FAILURE_THRESHOLD, "the attempts after the circuit opened never left"
        assert registry.entries == {}
        stored = snapshot(service_id)
        assert stored["registry_id"] is None
        assert stored["events"] == ["service_submitted", "validation_failed"], "nothing registered, nothing undone"

        registry.heal()
        spec = good_spec(provider.url, name="faults-registry-back")
        accepted = api.post("/api/v1/services", json=spec, headers=headers)
        assert accepted.status_code == 202, accepted.text
        report = wait_settled(api, accepted.json()["serviceId"], headers)
    assert report["status"] == "active"
    assert [e["metadata"]["marketplaceId"] for e in registry.entries.values()] == [accepted.json()["serviceId"]]


@pytest.mark.e2e
def test_registry_down_during_compensation_is_waited_out_and_nothing_is_left(
    api: httpx.Client, faults_stack: Stack, registry: FakeRegistry, app_db: str
) -> None:
    """Registered, then the endpoint fails; the rollback's DELETE meets a 503 outage that opens
    the circuit. The rollback waits for the half-open trial instead of giving up."""
    registry.outage(methods={"DELETE"})
    with FakeProvider("health_500") as provider:
        spec = good_spec(provider.url, name="faults-undo-outage")
        headers = as_provider(spec)
        accepted = api.post("/api/v1/services", json=spec, headers=headers)
        assert accepted.status_code == 202, accepted.text
        service_id = accepted.json()["serviceId"]
        flow_run_id = started_run_id(api, service_id, headers)
        eventually(lambda: registry.count("DELETE", failed=True) >= FAILURE_THRESHOLD, 90, "the failing DELETEs")
        time.sleep(0.5)  # the circuit is open now: the next attempt waits for its reset timeout
        assert registry.count("DELETE") == FAILURE_THRESHOLD
        registry.heal()
        report = wait_settled(api, service_id, headers, timeout=RESET_TIMEOUT + 60)
    assert report["status"] == "failed"
    assert report["failure"]["phase"] == "endpoint_tests"
    assert not [e for e in registry.entries.values() if e["metadata"]["marketplaceId"] == service_id]
    assert registry.count("DELETE") == FAILURE_THRESHOLD + 1, "two refused, then the half-open trial"
    removal = task_runs(faults_stack, flow_run_id, "remove-registry-entry")[0]
    # The failure that trips the breaker raises CircuitBreakerError: that attempt waits, then tries.
    assert removal.run_count == FAILURE_THRESHOLD
    assert removal.state is not None and removal.state.is_completed()
    stored = snapshot(service_id)
    assert stored["registry_id"] is None
    rollbacks = [(action, details) for action, _, _, details in stored["audit"] if action.startswith("rollback")]
    assert [action for action, _ in rollbacks] == ["rollback", "rollback_completed"]
    assert rollbacks[-1][1]["problems"] == [], "compensation complete"
    assert stored["events"][-2:] == ["rollback_completed", "validation_failed"]
