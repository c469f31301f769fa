"""Assembles the publishing status report from our records and the Prefect run state."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from api.orchestrator import Orchestrator
from api.schemas import FailureOut, Finding, FlowRunOut, PhaseResultOut, ServiceStatusOut
from core.domain import Phase, ServiceStatus, requires_approval
from storage.models import Service, ValidationResult
from storage.repositories import phases


def build_status(session: Session, service: Service, orch: Orchestrator) -> ServiceStatusOut:
    """What a provider polls while the pipeline runs, and what an operator reads after."""
    results = phases.for_service(session, service.id, service.flow_run_id)
    failed = service.status == ServiceStatus.FAILED.value
    return ServiceStatusOut(
        service_id=service.id,
        status=service.status,
        current_phase=service.current_phase,
        requires_approval=requires_approval(service.spec),
        published_at=service.published_at,
        failure=FailureOut(phase=service.failure_phase, reason=service.failure_reason) if failed else None,
        errors=_error_messages(service, results),
        violations=[f for r in results if r.phase == Phase.POLICY_COMPLIANCE.value for f in _findings(r, r.errors)],
        warnings=[f for r in results for f in _findings(r, r.warnings)],
        phases=[PhaseResultOut.model_validate(_phase_row(r)) for r in results],
        flow_run=_flow_run(service, orch),
    )


def _phase_row(result: ValidationResult) -> dict[str, Any]:
    return {
        "phase": result.phase,
        "check": result.check_name,
        "outcome": result.outcome,
        "started_at": result.started_at,
        "duration_ms": result.duration_ms,
        "errors": result.errors,
        "warnings": result.warnings,
        "evidence": result.evidence,
    }


def _findings(result: ValidationResult, items: list[Any]) -> list[Finding]:
    phase = f"{result.phase}.{result.check_name}" if result.check_name else result.phase
    return [Finding(phase=phase, **item) for item in items]


def _error_messages(service: Service, results: Any) -> list[str]:
    messages = [f"{e.get('pointer') or '/'}: {e['message']}" for r in results for e in r.errors]
    if service.failure_reason and not messages:
        messages.append(service.failure_reason)
    return messages


def _flow_run(service: Service, orch: Orchestrator) -> FlowRunOut | None:
    if not service.flow_run_id:
        return None
    state = orch.run_state(service.flow_run_id)
    return FlowRunOut(
        id=service.flow_run_id,
        state=state.type if state else None,
        state_name=state.name if state else None,
        url=orch.run_url(service.flow_run_id),
    )
