"""Persistence (phase 6): the validated version becomes the record the rest of the pipeline works on.

Not a task of its own: it opens the endpoint-test task (tasks/endpoint_tests.py), whose retries
cover it. Moving to `testing` is idempotent, so a retried task stores the same record once.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from core.domain import Outcome, Phase, PhaseOutcome, ServiceStatus
from storage.database import session_scope
from storage.repositories import phases, versions
from storage.repositories.services import SYSTEM
from tasks._common import SpecInput


def persist_version(inp: SpecInput) -> PhaseOutcome:
    """Store the validated spec with its validation summary, move on to `testing` and into the
    endpoint-test phase: one transaction."""
    started_at, t0 = datetime.now(UTC), time.perf_counter()
    with session_scope() as session:
        version = versions.get(session, inp.version_id, for_update=True)
        if version.status == ServiceStatus.TESTING.value:  # a retried task: stored already
            return PhaseOutcome(phase=Phase.PERSISTENCE, outcome=Outcome.PASSED, evidence={"repeated": True})
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
        outcome = PhaseOutcome(phase=Phase.PERSISTENCE, outcome=Outcome.PASSED, evidence={"validation": summary})
        outcome.duration_ms = (time.perf_counter() - t0) * 1000
        phases.record(session, inp.service_id, inp.flow_run_id, outcome, started_at)
        versions.set_phase(session, inp.version_id, Phase.ENDPOINT_TESTS.value)
    return outcome
