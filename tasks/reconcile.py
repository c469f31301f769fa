"""Finding publications whose flow run ended without finishing them, and failing them cleanly."""

from __future__ import annotations

from uuid import UUID

from prefect import task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from pydantic import BaseModel
from sqlalchemy import select

from core.domain import IN_PIPELINE, ServiceStatus
from storage.database import session_scope
from storage.models import ServiceVersion
from storage.repositories import approvals, versions
from storage.repositories.services import Actor
from tasks._common import backoff, jitter

RECONCILER = Actor("reconciler", "system")
# Prefect states in which a run will never move its publication forward again.
ENDED = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class StalledPublication(BaseModel):
    service_id: str
    version_id: str
    flow_run_id: str
    version_status: str
    registry_id: str | None
    run_state: str
    run_message: str | None

    @property
    def reason(self) -> str:
        message = f": {self.run_message}" if self.run_message else ""
        if self.version_status == ServiceStatus.PENDING_APPROVAL.value and self.run_state == "FAILED":
            return "approval timed out"
        if self.run_state == "CRASHED":
            return f"publish run crashed{message}"
        if self.run_state == "CANCELLED":
            return "publish run cancelled"
        return f"publish run ended {self.run_state.lower()} without finishing{message}"


@task(name="find-stalled-publications", retries=3, retry_delay_seconds=backoff(3), retry_jitter_factor=jitter())
def find_stalled_publications() -> list[StalledPublication]:
    """Versions still in the pipeline whose Prefect run has ended (crashed, expired, cancelled)."""
    with session_scope() as session:
        rows = session.scalars(
            select(ServiceVersion).where(
                ServiceVersion.status.in_([s.value for s in IN_PIPELINE]), ServiceVersion.flow_run_id.is_not(None)
            )
        ).all()
        candidates = {r.flow_run_id: (r.service_id, r.id, r.status, r.registry_id) for r in rows if r.flow_run_id}
    if not candidates:
        return []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in candidates])),
            limit=len(candidates),
        )
    stalled = []
    for run in runs:
        if run.state is None or run.state.type.value not in ENDED:
            continue
        service_id, version_id, status, registry_id = candidates[str(run.id)]
        stalled.append(
            StalledPublication(
                service_id=service_id,
                version_id=version_id,
                flow_run_id=str(run.id),
                version_status=status,
                registry_id=registry_id,
                run_state=run.state.type.value,
                run_message=run.state.message,
            )
        )
    return stalled


@task(name="fail-stalled-publication", retries=5, retry_delay_seconds=backoff(5), retry_jitter_factor=jitter())
def fail_stalled(stalled: StalledPublication) -> str:
    """Expire its approval if it waited for one, and end the version `failed` with the reason."""
    with session_scope() as session:
        version = versions.get(session, stalled.version_id, for_update=True)
        if version.status != stalled.version_status:
            return f"skipped: now {version.status}"
        if version.status == ServiceStatus.PENDING_APPROVAL.value:
            approvals.close(session, version.id, "expired", None, stalled.reason)
        versions.transition(
            session,
            version.id,
            ServiceStatus.FAILED,
            actor=RECONCILER,
            reason=stalled.reason,
            event_type="validation_failed",
            flow_run_id=stalled.flow_run_id,
            details={"runState": stalled.run_state, "runMessage": stalled.run_message},
        )
        return "failed"
