"""Phase 7 as one Prefect task: the version is persisted (phase 6), then the provider's endpoint is
tested by five checks at once (health, auth, conformance, security, latency; `checks/endpoint_suite.py`).

One task rather than five: each task run costs the Prefect server about a tenth of a CPU-second
of orchestration, which bounded how many publications two cores could carry at once. The checks
still run in parallel (threads) and each is retried on its own while its failure is transient.
Every check's final outcome is recorded (with its number of attempts) in one transaction. Prefect
retries the whole task only for unexpected errors (the database, a bug).
"""

from __future__ import annotations

from prefect import task
from pydantic import BaseModel

from checks.endpoint_suite import run_checks
from core.domain import PhaseOutcome
from tasks._common import SpecInput, backoff, jitter, record_outcomes
from tasks.context import flow_context
from tasks.persistence import persist_version
from tasks.run_log import log_phases


class EndpointReport(BaseModel):
    """Every check's final outcome, in CHECKS order."""

    outcomes: list[PhaseOutcome]

    @property
    def failures(self) -> list[PhaseOutcome]:
        return [o for o in self.outcomes if not o.passed]


@task(
    name="endpoint-tests",
    retries=2,
    retry_delay_seconds=backoff(2),
    retry_jitter_factor=jitter(),
    timeout_seconds=300,
)
def run_endpoint_tests(inp: SpecInput) -> EndpointReport:
    """Persist the validated version (`testing`), then test the provider's endpoint with five checks at once."""
    persisted = persist_version(inp)
    results = run_checks(inp.spec, flow_context().settings)
    record_outcomes(inp, results)
    report = EndpointReport(outcomes=[outcome for outcome, _ in results])
    log_phases([persisted, *report.outcomes])
    return report
