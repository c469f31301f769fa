"""Reconciliation, deprecation and retirement flows in-process against a real Prefect server."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.states import Crashed, Failed

from core.domain import ServiceStatus
from deployments.stack import Stack
from flows.deprecate import deprecate_service, retire_service
from flows.reconcile import reconcile_publications
from storage.database import reset_engine, session_scope
from storage.repositories import approvals, audit, services, versions
from storage.repositories.services import SYSTEM, Actor
from storage.search import SearchQuery, get_search_index
from tests.support.registry import FakeRegistry
from tests.support.specs import make_spec

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def stuck_version(prefect: SyncPrefectClient, target: ServiceStatus, registry_id: str | None) -> tuple[str, str, str]:
    """A version left mid-pipeline by a run we then mark as ended, as a killed process would leave it."""
    deployment = prefect.read_deployment_by_name("publish-service/publish-service")
    run = prefect.create_flow_run_from_deployment(deployment.id, parameters={"service_id": "x", "version_id": "y"})
    with session_scope() as session:
        service = services.create_submitted(session, make_spec(name=f"svc-{run.id.hex[:8]}"), Actor("p"))
        version_id = versions.latest(session, service.id).id
        versions.set_flow_run(session, version_id, str(run.id))
        versions.set_registry_id(session, version_id, registry_id)
        for status in (ServiceStatus.VALIDATING, ServiceStatus.TESTING, ServiceStatus.PENDING_APPROVAL):
            versions.transition(session, version_id, status, actor=SYSTEM, reason="pipeline")
            if status is target:
                break
        if target is ServiceStatus.PENDING_APPROVAL:
            approvals.request(session, service.id, version_id, str(run.id), 1)
    return service.id, version_id, str(run.id)


def test_reconcile_compensates_crashed_and_expired_runs(flow_env: pytest.MonkeyPatch, prefect_server: Stack) -> None:
    with FakeRegistry() as registry, SyncPrefectClient(prefect_server.config.prefect_api_url) as prefect:
        flow_env.setenv("MARKETPLACE_REGISTRY__URL", registry.url)
        reset_engine()
        registry.entries["reg-crashed"] = {}
        crashed = stuck_version(prefect, ServiceStatus.TESTING, "reg-crashed")
        expired = stuck_version(prefect, ServiceStatus.PENDING_APPROVAL, None)
        running = stuck_version(prefect, ServiceStatus.TESTING, None)
        prefect.set_flow_run_state(UUID(crashed[2]), Crashed(message="process killed (-9)"), force=True)
        prefect.set_flow_run_state(UUID(expired[2]), Failed(message="paused and never resumed"), force=True)

        assert reconcile_publications() == 2
        assert registry.entries == {}
        dead_runs = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(crashed[2])]))
        (report,) = [a for a in prefect.read_artifacts(artifact_filter=dead_runs) if a.type == "markdown"]
        assert report.key == f"publish-report-{crashed[0]}"
        first = str(report.data).splitlines()[0]
        assert first.startswith("## Failed"), "the dead run's page says why it failed"
        assert first.endswith(": publish run crashed: process killed (-9)")

    with session_scope() as session:
        version = versions.get(session, crashed[1])
        assert version.status == "failed"
        assert version.failure_reason == "publish run crashed: process killed (-9)"
        assert version.registry_id is None
        assert services.get(session, crashed[0]).status == "failed"
        assert "rollback_completed" in [a.action for a in audit.for_service(session, crashed[0])]

        assert versions.get(session, expired[1]).failure_reason == "approval timed out"
        assert approvals.by_status(session, "expired", 0, 10)[0].version_id == expired[1]

        assert versions.get(session, running[1]).status == "testing", "a run still going is left alone"


def test_deprecation_schedules_retirement_and_retirement_rechecks(
    flow_env: pytest.MonkeyPatch, prefect_server: Stack
) -> None:
    with session_scope() as session:
        service = services.create_submitted(session, make_spec(), Actor("p"))
        version_id = versions.latest(session, service.id).id
        for status in (ServiceStatus.VALIDATING, ServiceStatus.TESTING, ServiceStatus.ACTIVE):
            versions.transition(session, version_id, status, actor=SYSTEM, reason="pipeline")
    run_id = deprecate_service(service.id, "acme", "provider", "old model", 3600)
    listed = get_search_index().search(SearchQuery(text="acme", include_deprecated=True))
    assert [(h.service_id, h.status) for h in listed.items] == [(service.id, "deprecated")]
    assert get_search_index().search(SearchQuery(text="acme")).total == 0, "hidden unless asked for"

    with session_scope() as session, SyncPrefectClient(prefect_server.config.prefect_api_url) as prefect:
        stored = services.get(session, service.id)
        assert stored.status == "deprecated"
        assert stored.retirement_flow_run_id == run_id
        assert stored.sunset_at is not None
        assert stored.deprecated_at is not None
        assert 3590 <= (stored.sunset_at - stored.deprecated_at).total_seconds() <= 3610
        scheduled = prefect.read_flow_run(UUID(run_id))
        assert scheduled.state is not None
        assert scheduled.state.type.value == "SCHEDULED"
        assert scheduled.expected_start_time is not None
        assert scheduled.expected_start_time > datetime.now(UTC)
        assert scheduled.name == "retire acme/acme-chat", "named when it was scheduled, for the Prefect UI"
        assert {"provider:acme", f"service:{service.id}"} <= set(scheduled.tags)

    # a run that is not the scheduled one (or comes early) leaves the service alone
    assert retire_service(service.id).startswith("skipped")
    with session_scope() as session:
        assert services.get(session, service.id).status == "deprecated"
