"""The endpoint-test task (phase 7) without the engine: it persists the version, then records every check."""

from __future__ import annotations

import pytest

import tasks.endpoint_tests as endpoint_tests
from core.domain import ServiceStatus
from tasks._common import SpecInput
from tests.support.provider import FakeProvider, good_spec


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_task_persists_then_records_every_check_with_its_outcome(database_url, monkeypatch):
    from storage.database import reset_engine, session_scope
    from storage.repositories import phases, services, versions
    from storage.repositories.services import SYSTEM, Actor

    monkeypatch.setenv("MARKETPLACE_ENDPOINT_TESTS__ALLOW_INSECURE_ENDPOINTS", "true")
    monkeypatch.setenv("MARKETPLACE_ENDPOINT_TESTS__LATENCY_SAMPLES", "2")
    reset_engine()
    with FakeProvider("open_auth") as provider:
        spec = good_spec(provider.url)
        with session_scope() as session:
            service = services.create_submitted(session, spec, Actor("test"))
            ids = {"service_id": service.id, "version_id": versions.latest(session, service.id).id}
            versions.transition(session, ids["version_id"], ServiceStatus.VALIDATING, actor=SYSTEM, reason="test")
        inp = SpecInput(**ids, flow_run_id="run-1", spec=spec)
        report = endpoint_tests.run_endpoint_tests.fn(inp)
        endpoint_tests.run_endpoint_tests.fn(inp)  # a retried task: persisted once, checks recorded again

    assert [o.check for o in report.outcomes] == ["health", "auth", "conformance", "security", "latency"]
    assert [o.check for o in report.failures] == ["auth"]
    assert report.failures[0].evidence["attempts"] == 1, "an open auth endpoint is not retried"
    with session_scope() as session:
        recorded = [(r.phase, r.check_name, r.outcome) for r in phases.for_service(session, ids["service_id"], "run-1")]
        version = versions.get(session, ids["version_id"])
        assert (version.status, version.current_phase) == ("testing", "endpoint_tests")
    assert recorded.count(("persistence", None, "passed")) == 1
    assert recorded.count(("endpoint_tests", "auth", "failed")) == 2
    assert recorded.count(("endpoint_tests", "health", "passed")) == 2


def test_the_flow_gets_one_task_with_retries_for_unexpected_errors():
    task = endpoint_tests.run_endpoint_tests
    assert (task.name, task.retries, task.timeout_seconds) == ("endpoint-tests", 2, 300)
