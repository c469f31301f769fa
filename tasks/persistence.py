"""Persistence: the validated service becomes the record the rest of the pipeline works on."""

from __future__ import annotations

from prefect import task

from core.domain import Outcome, Phase, PhaseOutcome, ServiceStatus
from storage.database import session_scope
from storage.repositories import phases, services
from storage.repositories.services import SYSTEM
from tasks._common import SpecInput, backoff, jitter, run_phase


@task(name="persistence", retries=5, retry_delay_seconds=backoff(5), retry_jitter_factor=jitter(), timeout_seconds=60)
def persist_service(inp: SpecInput) -> PhaseOutcome:
    """Store the validated spec and move the service on to `testing`, in one transaction."""

    def check() -> PhaseOutcome:
        with session_scope() as session:
            service = services.get(session, inp.service_id, for_update=True)
            service.spec = inp.spec
            service.tags = list(inp.spec.get("tags", []))
            results = phases.for_service(session, inp.service_id, inp.flow_run_id)
            summary = {r.phase: r.outcome for r in results if r.check_name is None}
            services.transition(
                session,
                inp.service_id,
                ServiceStatus.TESTING,
                actor=SYSTEM,
                reason="validated, policy compliant and registered",
                flow_run_id=inp.flow_run_id,
                details={"validation": summary, "registryId": service.registry_id},
            )
        return PhaseOutcome(phase=Phase.PERSISTENCE, outcome=Outcome.PASSED, evidence={"validation": summary})

    return run_phase(inp, check, Phase.PERSISTENCE)
