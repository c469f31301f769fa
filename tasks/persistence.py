"""Persistence: the validated version becomes the record the rest of the pipeline works on."""

from __future__ import annotations

from prefect import task

from core.domain import Outcome, Phase, PhaseOutcome, ServiceStatus
from storage.database import session_scope
from storage.repositories import phases, versions
from storage.repositories.services import SYSTEM
from tasks._common import SpecInput, backoff, jitter, run_phase


@task(name="persistence", retries=5, retry_delay_seconds=backoff(5), retry_jitter_factor=jitter(), timeout_seconds=60)
def persist_service(inp: SpecInput) -> PhaseOutcome:
    """Store the validated spec with its validation summary and move on to `testing`, in one transaction."""

    def check() -> PhaseOutcome:
        with session_scope() as session:
            version = versions.get(session, inp.version_id, for_update=True)
            version.spec = inp.spec
            results = phases.for_service(session, inp.service_id, inp.flow_run_id)
            summary = {r.phase: r.outcome for r in results if r.check_name is None}
            versions.transition(
                session,
                inp.version_id,
                ServiceStatus.TESTING,
                actor=SYSTEM,
                reason="validated, policy compliant and registered",
                flow_run_id=inp.flow_run_id,
                details={"validation": summary, "registryId": version.registry_id},
            )
        return PhaseOutcome(phase=Phase.PERSISTENCE, outcome=Outcome.PASSED, evidence={"validation": summary})

    return run_phase(inp, check, Phase.PERSISTENCE)
