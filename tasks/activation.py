"""Activation (phase 9): the version goes into the search index, then live, with `service_published`
queued in the outbox. One task: indexing is idempotent and a retried task does both again; the
flow registers the index's undo step before it starts (undoing an entry never made is a no-op)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prefect import task

from core.domain import Outcome, Phase, PhaseOutcome, ServiceStatus
from storage.database import session_scope
from storage.repositories import phases, versions
from storage.repositories.services import SYSTEM
from tasks._common import PhaseInput, backoff, jitter
from tasks.indexing import index_version
from tasks.run_log import log_phases


@task(name="activation", retries=5, retry_delay_seconds=backoff(5), retry_jitter_factor=jitter(), timeout_seconds=60)
def activate_service(inp: PhaseInput) -> PhaseOutcome:
    """Index the version, then mark it `active` (replacing a live older one) and queue the published event."""
    published_at = datetime.now(UTC)  # one instant for the search document and the database
    indexed = index_version(inp, published_at)

    started_at, t0 = datetime.now(UTC), time.perf_counter()
    with session_scope() as session:  # the move, its audit record, its event and the phase result at once
        version = versions.transition(
            session,
            inp.version_id,
            ServiceStatus.ACTIVE,
            actor=SYSTEM,
            reason="all checks passed",
            event_type="service_published",
            flow_run_id=inp.flow_run_id,
            published_at=published_at,
        )
        written = version.published_at.isoformat() if version.published_at else None
        evidence = {"publishedAt": written, "version": version.version}
        outcome = PhaseOutcome(phase=Phase.ACTIVATION, outcome=Outcome.PASSED, evidence=evidence)
        outcome.duration_ms = (time.perf_counter() - t0) * 1000
        phases.record(session, inp.service_id, inp.flow_run_id, outcome, started_at)
    log_phases([outcome, indexed])
    return outcome
