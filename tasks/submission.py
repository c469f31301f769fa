"""Phases 2 to 4 as one task: the submitted version is loaded, moved to `validating`, and checked.

Metadata, OpenAPI 3.1 and policies only read the spec, take milliseconds and give the same
answer on every try: three Prefect tasks bought three task runs of orchestration (about a
tenth of a CPU-second each on the Prefect server) and nothing a retry could change. They run
in order here, each recorded as its own phase for the status report; the first that fails
ends the checks. Retries are for what can fail transiently: the version not committed yet (the
API starts the run just before it commits), the database, an OPA server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

from prefect import task
from pydantic import BaseModel, Field

from core.domain import Phase, PhaseOutcome, ServiceStatus
from core.settings import Settings, get_settings
from storage.database import session_scope
from storage.repositories import versions
from storage.repositories.services import SYSTEM
from tasks._common import PhaseInput, backoff, jitter, record_outcomes, timed
from tasks.openapi import validate_openapi
from tasks.phase_lines import log_phases
from tasks.policy import check_policies
from tasks.validation import validate_metadata

COMMIT_WAIT_SECONDS = 3.0
Check = Callable[[dict[str, Any], Settings], PhaseOutcome]
CHECKS: tuple[tuple[Phase, Check], ...] = (
    (Phase.METADATA_VALIDATION, validate_metadata),
    (Phase.OPENAPI_VALIDATION, validate_openapi),
    (Phase.POLICY_COMPLIANCE, check_policies),
)


class VersionNotStored(LookupError):
    """The run's version is not in the database: its submission was refused, or Prefect's answer
    to the API was lost, after the run had been created (see api/publishing.py)."""


class SubmissionChecks(BaseModel):
    """The spec as submitted and what each check found, in order (the last one failed, if any did)."""

    spec: dict[str, Any]
    outcomes: list[PhaseOutcome] = Field(default_factory=list)

    @property
    def failure(self) -> PhaseOutcome | None:
        return next((o for o in self.outcomes if not o.passed), None)


@task(
    name="check-submission",
    retries=5,
    retry_delay_seconds=backoff(5),
    retry_jitter_factor=jitter(),
    timeout_seconds=get_settings().policy.timeout_seconds + 120,
)
def check_submission(inp: PhaseInput) -> SubmissionChecks:
    """Load the version, move it to `validating`, then check metadata, OpenAPI and policies."""
    spec = _start_validating(inp)
    settings = get_settings()
    result = SubmissionChecks(spec=spec)
    following = [phase for phase, _ in CHECKS[1:]] + [Phase.REGISTRY_SYNC]  # where each passed check leads
    for (_, check), next_phase in zip(CHECKS, following, strict=True):
        outcome, started_at = timed(partial(check, spec, settings))
        result.outcomes.append(outcome)
        record_outcomes(inp, [(outcome, started_at)], next_phase=next_phase if outcome.passed else None)
        if not outcome.passed:
            break
    log_phases(result.outcomes)
    return result


def _start_validating(inp: PhaseInput) -> dict[str, Any]:
    """The submitted spec; the version moves `submitted → validating` in the same transaction."""
    _wait_for_version(inp.version_id)
    with session_scope() as session:
        version = versions.get(session, inp.version_id)
        spec = dict(version.spec)
        versions.transition(
            session,
            inp.version_id,
            ServiceStatus.VALIDATING,
            actor=SYSTEM,
            reason="publish pipeline started",
            flow_run_id=inp.flow_run_id,
        )
        versions.set_phase(session, inp.version_id, CHECKS[0][0].value)
    return spec


def _wait_for_version(version_id: str) -> None:
    """The API creates the run just before it commits the version, and a worker can be that quick:
    look again every few tens of milliseconds for a moment (a task retry would wait a whole backoff
    delay), then leave the rest to the task's retries (a refused or lost submission never commits)."""
    deadline = time.monotonic() + COMMIT_WAIT_SECONDS
    delay = 0.02
    while True:
        with session_scope() as session:
            if versions.exists(session, version_id):
                return
        if time.monotonic() >= deadline:
            raise VersionNotStored(f"version {version_id} is not (yet) in the database")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
