"""A status report's content: our records' part (`StatusRecord`) and the Prefect run added to it.

Pure assembly, no caching (that is api/status/view.py): the record is built from what storage
loaded, and the report from the record plus the run's state as the orchestrator holds it
(api/status/run_states.py). Once our record says the run ended, a state read before that is not
shown (`state: null`, unknown) but read again at once in the background, so a `failed` version
never appears beside a run still `RUNNING`. The governance queue's entries are built here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from api.orchestrator import Orchestrator
from api.schemas import ApprovalOut, FailureOut, Finding, FlowRunOut, PhaseResultOut, ServiceStatusOut
from core.domain import Phase, ServiceStatus, requires_approval
from core.errors import NotFoundError
from storage.models import Approval, FlowRunRequest, ValidationResult
from storage.repositories import phases, services, versions
from storage.repositories.phases import Publication

# A version in these statuses has a run that is still working on it.
RUNNING_STATUSES = frozenset(
    {ServiceStatus.SUBMITTED.value, ServiceStatus.VALIDATING.value, ServiceStatus.TESTING.value}
)


@dataclass(frozen=True)
class StatusRecord:
    """A status report as our records have it: everything but the Prefect run state."""

    service_id: str
    provider_id: str
    status: str
    deprecated_at: datetime | None
    sunset_at: datetime | None
    flow_run_id: str | None
    run_ended_at: float | None  # epoch seconds: when the record says the run stopped working on the version
    report: dict[str, Any] | None  # ServiceStatusOut as JSON without `flowRun`; None: the service has no version
    queued_run: dict[str, Any] | None = None  # FlowRunOut as JSON while the run's start is owed

    def to_json(self) -> dict[str, Any]:
        return {
            "serviceId": self.service_id,
            "providerId": self.provider_id,
            "status": self.status,
            "deprecatedAt": _iso(self.deprecated_at),
            "sunsetAt": _iso(self.sunset_at),
            "flowRunId": self.flow_run_id,
            "runEndedAt": self.run_ended_at,
            "report": self.report,
            "queuedRun": self.queued_run,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StatusRecord:
        return cls(
            service_id=data["serviceId"],
            provider_id=data["providerId"],
            status=data["status"],
            deprecated_at=_parse(data["deprecatedAt"]),
            sunset_at=_parse(data["sunsetAt"]),
            flow_run_id=data["flowRunId"],
            run_ended_at=data["runEndedAt"],
            report=data["report"],
            queued_run=data.get("queuedRun"),
        )


def status_record(publication: Publication) -> StatusRecord:
    """What a provider polls while the pipeline runs: the latest version's publication."""
    service, version, results = publication.service, publication.version, publication.results
    report: dict[str, Any] | None = None
    run_ended_at: float | None = None
    if version is not None:
        failed = version.status == ServiceStatus.FAILED.value
        report = ServiceStatusOut(
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
            flow_run=None,
        ).model_dump(mode="json", by_alias=True, exclude={"flow_run"})
        if version.status not in RUNNING_STATUSES and version.updated_at is not None:
            run_ended_at = version.updated_at.timestamp()
    return StatusRecord(
        service_id=service.id,
        provider_id=service.provider_id,
        status=service.status,
        deprecated_at=service.deprecated_at,
        sunset_at=service.sunset_at,
        flow_run_id=version.flow_run_id if version is not None else None,
        run_ended_at=run_ended_at,
        report=report,
        queued_run=_queued_view(publication.queued_run),
    )


def _queued_view(request: FlowRunRequest | None) -> dict[str, Any] | None:
    """A run accepted but not created in Prefect yet (Prefect busy or down): how its start is going."""
    if request is None or request.flow_run_id is not None:
        return None
    run = FlowRunOut(
        id=None,
        state="QUEUED",
        state_name="Queued",
        url=None,
        start_attempts=request.attempts,
        last_start_error=request.last_error,
    )
    return run.model_dump(mode="json", by_alias=True)


def render_status(record: StatusRecord, orch: Orchestrator) -> dict[str, Any]:
    """The full report (ServiceStatusOut as JSON): the record and the run's Prefect state."""
    if record.report is None:
        raise NotFoundError(f"service {record.service_id} has no versions")
    if record.flow_run_id is None:
        return {**record.report, "flowRun": record.queued_run}
    run = flow_run_view(record.flow_run_id, orch, record.run_ended_at)
    return {**record.report, "flowRun": run.model_dump(mode="json", by_alias=True) if run else None}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


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


def flow_run_view(flow_run_id: str | None, orch: Orchestrator, not_before: float | None = None) -> FlowRunOut | None:
    """The run with its Prefect state (read at or after `not_before`, epoch seconds, when given)."""
    if not flow_run_id:
        return None
    state = orch.run_state(flow_run_id, not_before)
    return FlowRunOut(
        id=flow_run_id,
        state=state.type if state else None,
        state_name=state.name if state else None,
        url=orch.run_url(flow_run_id),
    )
