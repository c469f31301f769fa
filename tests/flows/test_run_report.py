"""What a publish run shows in the Prefect UI: its name and tags, its report artifact, its log lines.

The run is created the way the API creates it (owed in the submission's transaction, then created
on the deployment by the run starter, with the name and tags the API computes), then executed in
this process as the warm worker does, and everything is read back from the Prefect server.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import LogSort
from prefect.exceptions import Pause
from prefect.flow_engine import run_flow
from prefect.logging.handlers import APILogHandler

from api import intake
from api.orchestrator import Orchestrator
from api.run_starter import RunStarter, StarterPolicy
from core.settings import PrefectSettings
from deployments.stack import Stack
from flows.publish import publish_service
from storage.database import reset_engine, session_scope
from storage.repositories import services, versions
from storage.repositories.services import Actor
from tests.support.provider import FakeProvider, good_spec
from tests.support.registry import FakeRegistry

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.fixture
def prefect(prefect_server: Stack) -> Iterator[SyncPrefectClient]:
    with SyncPrefectClient(prefect_server.config.prefect_api_url) as client:
        yield client


def publish_as_deployed(spec: dict[str, Any], prefect_server: Stack, prefect: SyncPrefectClient) -> FlowRun:
    """Submit the spec, create its run on the publish deployment as the API does, run it here."""
    settings = PrefectSettings(api_url=prefect_server.config.prefect_api_url)
    with session_scope() as session:
        service = services.create_submitted(session, spec, Actor("acme", "provider"))
        service_id, version_id = service.id, versions.latest(session, service.id).id
        intake.owe(session, intake.publish_run(settings, service_id, version_id, spec))
    orchestrator = Orchestrator(settings)
    orchestrator.open()
    try:
        assert RunStarter(orchestrator, StarterPolicy(), lock_rows=True).drain() == 1
    finally:
        orchestrator.close()
    with session_scope() as session:
        flow_run_id = versions.get(session, version_id).flow_run_id
    assert flow_run_id is not None
    with contextlib.suppress(Pause):  # suspended for approval: recorded by the engine; a worker lets go alike
        run_flow(publish_service, flow_run=prefect.read_flow_run(UUID(flow_run_id)), return_type="state")
    APILogHandler().flush()  # the run's logs reach the server in batches: send what is queued
    return prefect.read_flow_run(UUID(flow_run_id))


def report_of(prefect: SyncPrefectClient, run: FlowRun) -> tuple[str | None, str]:
    """The run's report: its key and markdown (exactly one markdown artifact per run; its persisted
    result is an artifact of another type)."""
    run_artifacts = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
    reports = [a for a in prefect.read_artifacts(artifact_filter=run_artifacts) if a.type == "markdown"]
    assert len(reports) == 1, [a.key for a in reports]
    return reports[0].key, str(reports[0].data)


def log_messages(prefect: SyncPrefectClient, run: FlowRun) -> list[str]:
    logs = prefect.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])), sort=LogSort.TIMESTAMP_ASC, limit=200
    )
    return [log.message for log in logs]


def service_id_of(run: FlowRun) -> str:
    return str(run.parameters["service_id"])


def test_a_published_run_is_named_tagged_reported_and_logged(
    flow_env: pytest.MonkeyPatch, prefect_server: Stack, prefect: SyncPrefectClient
) -> None:
    with FakeProvider() as provider:
        run = publish_as_deployed(good_spec(provider.url, name="ui-good", version="1.2.0"), prefect_server, prefect)
    service_id = service_id_of(run)
    assert run.state is not None and run.state.is_completed(), run.state
    assert run.name == "publish acme/ui-good 1.2.0"
    assert {"provider:acme", f"service:{service_id}", "publishing"} <= set(run.tags)

    key, markdown = report_of(prefect, run)
    assert key == f"publish-report-{service_id}"
    assert markdown.splitlines()[0] == "## Published: acme/ui-good 1.2.0 is active"
    assert "| endpoint tests | latency | passed |" in markdown
    assert "vs SLA 2000 ms" in markdown

    messages = log_messages(prefect, run)
    expected = [
        "metadata validation: passed",
        "OpenAPI validation: passed",
        "policy compliance: passed",
        f"registry sync: registered as marketplace:{service_id}",
        "persistence: version stored, now testing",
        "endpoint tests: 5 passed (health ",
        "activation: active, indexed (version 1.2.0)",
    ]
    for line in expected:
        assert any(m.startswith(line) for m in messages), (line, messages)
    assert next(m for m in messages if m.startswith("endpoint tests:")).count("vs SLA 2000 ms") == 1


def test_a_failed_run_says_why_first_and_logs_what_failed(
    flow_env: pytest.MonkeyPatch, prefect_server: Stack, prefect: SyncPrefectClient
) -> None:
    with FakeRegistry() as registry, FakeProvider("health_500") as provider:
        flow_env.setenv("MARKETPLACE_REGISTRY__URL", registry.url)
        reset_engine()
        run = publish_as_deployed(good_spec(provider.url, name="ui-bad"), prefect_server, prefect)
        assert registry.entries == {}, "compensated"
    assert run.state is not None and run.state.is_failed(), run.state
    assert run.name == "publish acme/ui-bad 1.0.0"

    _, markdown = report_of(prefect, run)
    first = markdown.splitlines()[0]
    assert first.startswith("## Failed in endpoint tests: endpoint_tests.health failed: /endpoint/url: ")
    assert "health check answered 500" in first
    assert "**compensation** undo registry: done" in markdown
    row = "| endpoint tests · health | `/endpoint/url` | health check answered 500 | endpoint-server-error |"
    assert row in markdown

    messages = log_messages(prefect, run)
    # the health URL answers 500, so the conformance check of GET /health fails too
    failed_tests = next(m for m in messages if m.startswith("endpoint tests: 3 passed, 2 failed (health FAILED"))
    assert "health check answered 500" in failed_tests
    assert "conformance FAILED" in failed_tests
    assert any(m.startswith("publish failed in endpoint tests: endpoint_tests.health failed") for m in messages)
    assert "compensation: undo registry done" in messages


def test_a_policy_failure_lists_the_violations(
    flow_env: pytest.MonkeyPatch, prefect_server: Stack, prefect: SyncPrefectClient
) -> None:
    spec = good_spec("http://provider.example.com/v1", name="ui-policy")
    spec["compliance"] = {"level": "public", "dataResidency": ["DE"], "certifications": []}
    run = publish_as_deployed(spec, prefect_server, prefect)
    _, markdown = report_of(prefect, run)
    assert markdown.startswith("## Failed in policy compliance: policy_compliance failed: ")
    assert "### Policy violations (2)" in markdown
    assert "| https-required | critical |" in markdown
    messages = log_messages(prefect, run)
    assert "policy compliance: 2 violations (https-required, gdpr-certification-required)" in messages


def test_a_run_waiting_for_approval_reports_until_when(
    flow_env: pytest.MonkeyPatch, prefect_server: Stack, prefect: SyncPrefectClient
) -> None:
    with FakeProvider() as provider:
        spec = good_spec(provider.url, name="ui-approval")
        spec["compliance"]["level"] = "confidential"
        run = publish_as_deployed(spec, prefect_server, prefect)
    assert run.state is not None and run.state.is_paused(), run.state
    _, markdown = report_of(prefect, run)
    assert markdown.startswith("## Waiting for approval: acme/ui-approval 1.0.0 (expires ")
    assert any(m.startswith("approval: waiting for governance (expires ") for m in log_messages(prefect, run))
