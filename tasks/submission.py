"""Phases 2 to 4 as one task: the submitted version is loaded, moved to `validating`, and checked.

Metadata, OpenAPI 3.1 and policies only read the spec, take milliseconds and give the same
answer on every try: three Prefect tasks bought three task runs of orchestration (about a
tenth of a CPU-second each on the Prefect server) and nothing a retry could change. They run
in order here, each recorded as its own phase for the status report; the first that fails
ends the checks. Retries are for what can fail transiently: the database, an OPA server.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from prefect import task
from pydantic import BaseModel, Field

from checks.openapi import validate_openapi
from checks.policy import check_policies
from checks.timing import timed
from checks.validation import validate_metadata
from core.domain import Phase, PhaseOutcome, ServiceStatus
from core.settings import Settings
from storage.database import session_scope
from storage.repositories import run_requests, versions
from storage.repositories.services import SYSTEM
from tasks._common import PhaseInput, backoff, jitter, record_outcomes
from tasks.context import flow_context
from tasks.run_log import log_phases

Check = Callable[[dict[str, Any], Settings], PhaseOutcome]
CHECKS: tuple[tuple[Phase, Check], ...] = (
    (Phase.METADATA_VALIDATION, validate_metadata),
    (Phase.OPENAPI_VALIDATION, validate_openapi),
    (Phase.POLICY_COMPLIANCE, check_policies),
)


class VersionNotStored(LookupError):
    """The run's version is not in the database (a run created by hand, or for a database since
    restored from an older backup): there is nothing to publish or to undo."""


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
    timeout_seconds=flow_context().settings.policy.timeout_seconds + 120,
)
def check_submission(inp: PhaseInput) -> SubmissionChecks:
    """Load the version, move it to `validating`, then check metadata, OpenAPI and policies."""
    spec = _start_validating(inp)
    settings = flow_context().settings
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
    """The submitted spec; the version moves `submitted → validating` in the same transaction.

    The run also records itself on the version when the API's run starter has not yet (Prefect's
    answer to the starter was lost, or the API died between the two): the status report then shows
    it at once, and the starter's retry finds it done (it gets the same run back anyway)."""
    with session_scope() as session:
        if not versions.exists(session, inp.version_id):
            raise VersionNotStored(f"version {inp.version_id} is not in the database")
        version = versions.get(session, inp.version_id)
        spec = dict(version.spec)
        if version.flow_run_id is None and inp.flow_run_id:  # the request's row first, as the starter locks it
            run_requests.started_elsewhere(session, inp.version_id, inp.flow_run_id)
            versions.set_flow_run(session, inp.version_id, inp.flow_run_id)
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
