"""Assembles status reports from our records and the Prefect run state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from api.orchestrator import Orchestrator
from api.schemas import ApprovalOut, FailureOut, Finding, FlowRunOut, PhaseResultOut, ServiceStatusOut
from core.domain import Phase, ServiceStatus, requires_approval
from storage.models import Approval, Service, ValidationResult
from storage.repositories import phases, services, versions


def build_status(session: Session, service: Service, orch: Orchestrator) -> ServiceStatusOut:
    """What a provider polls while the pipeline runs: the latest version's publication."""
    version = versions.latest(session, service.id)
    results = phases.for_service(session, service.id, version.flow_run_id) if version.flow_run_id else []
    failed = version.status == ServiceStatus.FAILED.value
    return ServiceStatusOut(
        service_id=service.id,
        status=service.status,
        version=version.version,
        version_status=version.status,
        current_phase=version.current_phase,
        requires_approval=requires_approval(version.spec),
        published_at=service.published_at,
        deprecated_at=service.deprecated_at,
        sunset_at=service.sunset_at,
        failure=FailureOut(phase=version.failure_phase, reason=version.failure_reason) if failed else None,
        errors=_error_messages(version.failure_reason, results),
        violations=policy_violations(results),
        warnings=[f for r in results for f in _findings(r, r.warnings)],
        phases=phase_rows(results),
        flow_run=flow_run_view(version.flow_run_id, orch),
    )


def approval_view(session: Session, approval: Approval, orch: Orchestrator) -> ApprovalOut:
    """One entry of the governance queue, with what the pipeline found."""
    service = services.get(session, approval.service_id)
    version = versions.get(session, approval.version_id)
    results = phases.for_service(session, service.id, approval.flow_run_id)
    run = flow_run_view(approval.flow_run_id, orch)
    assert run is not None
    return ApprovalOut(
        id=approval.id,
        service_id=service.id,
        service_name=service.name,
        version=version.version,
        status=approval.status,
        requested_at=approval.requested_at,
        expires_at=approval.expires_at,
        decided_at=approval.decided_at,
        reviewer=approval.reviewer,
        comment=approval.comment,
        flow_run=run,
        phases=phase_rows(results),
        violations=policy_violations(results),
        warnings=[f for r in results for f in _findings(r, r.warnings)],
    )


def phase_rows(results: Sequence[ValidationResult]) -> list[PhaseResultOut]:
    return [
        PhaseResultOut(
            phase=r.phase,
            check=r.check_name,
            outcome=r.outcome,
            started_at=r.started_at,
            duration_ms=r.duration_ms,
            errors=r.errors,
            warnings=r.warnings,
            evidence=r.evidence,
        )
        for r in results
    ]


def policy_violations(results: Sequence[ValidationResult]) -> list[Finding]:
    return [f for r in results if r.phase == Phase.POLICY_COMPLIANCE.value for f in _findings(r, r.errors)]


def _findings(result: ValidationResult, items: list[Any]) -> list[Finding]:
    phase = f"{result.phase}.{result.check_name}" if result.check_name else result.phase
    return [Finding(phase=phase, **item) for item in items]


def _error_messages(failure_reason: str | None, results: Sequence[ValidationResult]) -> list[str]:
    messages = [f"{e.get('pointer') or '/'}: {e['message']}" for r in results for e in r.errors]
    if failure_reason and not messages:
        messages.append(failure_reason)
    return messages


def flow_run_view(flow_run_id: str | None, orch: Orchestrator) -> FlowRunOut | None:
    if not flow_run_id:
        return None
    state = orch.run_state(flow_run_id)
    return FlowRunOut(
        id=flow_run_id,
        state=state.type if state else None,
        state_name=state.name if state else None,
        url=orch.run_url(flow_run_id),
    )
