"""What every phase task shares: its input model, retry delays and result recording."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from checks.timing import timed
from core.domain import Phase, PhaseOutcome
from core.settings import get_settings
from storage.database import session_scope
from storage.repositories import phases, versions


class PhaseInput(BaseModel):
    """Identifies the service, the version being published and the run a phase works for."""

    service_id: str
    version_id: str
    flow_run_id: str | None = None


class SpecInput(PhaseInput):
    """A phase that inspects the submitted spec."""

    spec: dict[str, Any] = Field(description="The spec as submitted (JSON object).")


def backoff(retries: int) -> list[float]:
    """Exponential retry delays from the configured base: 1 s, 2 s, 4 s ... by default."""
    base = get_settings().retries.base_delay_seconds
    return [base * 2**attempt for attempt in range(retries)]


def jitter() -> float:
    return get_settings().retries.jitter_factor


def record_outcomes(
    inp: PhaseInput, outcomes: list[tuple[PhaseOutcome, datetime]], next_phase: Phase | None = None
) -> None:
    """Store outcomes (and the phase the pipeline moves to) in one transaction, for the status report."""
    with session_scope() as session:
        for outcome, started_at in outcomes:
            phases.record(session, inp.service_id, inp.flow_run_id, outcome, started_at)
        if next_phase is not None:
            versions.set_phase(session, inp.version_id, next_phase.value)


def run_phase(inp: PhaseInput, check: Callable[[], PhaseOutcome], phase: Phase | None = None) -> PhaseOutcome:
    """Run a phase's check, time it, and record the outcome so the status endpoint can show it.

    Exceptions are not recorded here: they propagate so Prefect retries the task,
    and the flow records the final failure.
    """
    if phase is not None:  # shown by the status endpoint while the phase runs
        with session_scope() as session:
            versions.set_phase(session, inp.version_id, phase.value)
    outcome, started_at = timed(check)
    record_outcomes(inp, [(outcome, started_at)])
    return outcome
