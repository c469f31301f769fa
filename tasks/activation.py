"""Activation: the version goes live and `service_published` is queued in the outbox."""

from __future__ import annotations

from prefect import task

from core.domain import Outcome, Phase, PhaseOutcome, ServiceStatus
from storage.database import session_scope
from storage.repositories import versions
from storage.repositories.services import SYSTEM
from tasks._common import PhaseInput, backoff, jitter, run_phase


@task(name="activation", retries=5, retry_delay_seconds=backoff(5), retry_jitter_factor=jitter(), timeout_seconds=60)
def activate_service(inp: PhaseInput) -> PhaseOutcome:
    """Mark the version `active` (replacing a live older one) and queue the published event."""

    def check() -> PhaseOutcome:
        with session_scope() as session:
            version = versions.transition(
                session,
                inp.version_id,
                ServiceStatus.ACTIVE,
                actor=SYSTEM,
                reason="all checks passed",
                event_type="service_published",
                flow_run_id=inp.flow_run_id,
            )
            published_at = version.published_at.isoformat() if version.published_at else None
        evidence = {"publishedAt": published_at, "version": version.version}
        return PhaseOutcome(phase=Phase.ACTIVATION, outcome=Outcome.PASSED, evidence=evidence)

    return run_phase(inp, check, Phase.ACTIVATION)
