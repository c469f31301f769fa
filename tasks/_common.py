"""What every phase task shares: its input model, retry delays and result recording."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, SupportsIndex, overload

from prefect.utilities.math import clamped_poisson_interval
from pydantic import BaseModel, Field

from checks.timing import timed
from core.domain import Phase, PhaseOutcome
from storage.database import session_scope
from storage.repositories import phases, versions
from tasks.context import flow_context


class PhaseInput(BaseModel):
    """Identifies the service, the version being published and the run a phase works for."""

    service_id: str
    version_id: str
    flow_run_id: str | None = None


class SpecInput(PhaseInput):
    """A phase that inspects the submitted spec."""

    spec: dict[str, Any] = Field(description="The spec as submitted (JSON object).")


class RetryDelays(list[float]):
    """A task's retry delays, computed from the settings in force when Prefect reads them.

    Prefect accepts a list as `retry_delay_seconds` and indexes it when a try fails (its task engine's
    `handle_retry`), so each item is worked out then: exponential from `retries.base_delay_seconds`
    (1 s, 2 s, 4 s ... by default), spread by `retries.jitter_factor`. A setting changed after the
    task modules were imported applies to the next retry. Only the length, the retry count, is
    fixed when the decorator runs (Prefect reads `retries` then). The list itself holds the delays
    as they were at decoration, for code that reads its storage directly (the task run's policy
    sent to the server, informational). tests/tasks/test_retry_delays.py pins Prefect's indexing.
    """

    def __init__(self, retries: int) -> None:
        super().__init__(_delay(attempt, jitter=False) for attempt in range(retries))

    @overload
    def __getitem__(self, index: SupportsIndex) -> float: ...
    @overload
    def __getitem__(self, index: slice) -> list[float]: ...
    def __getitem__(self, index: SupportsIndex | slice) -> float | list[float]:
        attempts = range(len(self))[index]
        if isinstance(attempts, range):
            return [_delay(attempt) for attempt in attempts]
        return _delay(attempts)

    def __iter__(self) -> Iterator[float]:
        return (_delay(attempt) for attempt in range(len(self)))


def _delay(attempt: int, *, jitter: bool = True) -> float:
    retries = flow_context().settings.retries
    delay: float = retries.base_delay_seconds * 2.0**attempt
    if jitter and retries.jitter_factor and delay > 0:
        return float(clamped_poisson_interval(delay, clamping_factor=retries.jitter_factor))
    return delay


def backoff(retries: int) -> RetryDelays:
    """A task's `retry_delay_seconds`: exponential delays read from the settings at retry time."""
    return RetryDelays(retries)


def jitter() -> float:
    """A task's `retry_jitter_factor`: 0, none for Prefect to add, as the delays of `backoff` spread themselves.

    Prefect keeps `retry_jitter_factor` as the number given to the decorator; the configured factor is
    read with each delay instead, so it too may change after import.
    """
    return 0.0


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
