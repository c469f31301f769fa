"""Phase 7 as one Prefect task: the version is persisted (phase 6), then the provider's endpoint is
tested by five checks at once (health, auth, conformance, security, latency).

One task rather than five: each task run costs the Prefect server about a tenth of a CPU-second
of orchestration, which bounded how many publications two cores could carry at once. The checks
still run in parallel (threads) and each is retried on its own while its failure is transient
(unreachable, timeout, 5xx, a slow latency probe) with the pipeline's exponential backoff; an
open auth endpoint or a schema mismatch will not fix itself in a few seconds and is not retried.
Every check's final outcome is recorded (with its number of attempts) in one transaction. Prefect
retries the whole task only for unexpected errors (the database, a bug).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from prefect import task
from pydantic import BaseModel

from core.domain import PhaseOutcome
from core.settings import Settings, get_settings
from tasks._common import SpecInput, backoff, jitter, record_outcomes, timed
from tasks.endpoint_checks import TRANSIENT_CODES, check_auth, check_health, check_latency, check_security
from tasks.endpoint_conformance import check_conformance
from tasks.persistence import persist_version
from tasks.phase_lines import log_phases

Check = Callable[[dict[str, Any], Settings], PhaseOutcome]
CHECKS: tuple[Check, ...] = (check_health, check_auth, check_conformance, check_security, check_latency)
CHECK_RETRIES = 3  # per check, transient failures only


class EndpointReport(BaseModel):
    """Every check's final outcome, in CHECKS order."""

    outcomes: list[PhaseOutcome]

    @property
    def failures(self) -> list[PhaseOutcome]:
        return [o for o in self.outcomes if not o.passed]


def transient(outcome: PhaseOutcome) -> bool:
    """Whether a retry could pass: every blocking issue is of a transient kind."""
    return bool(outcome.errors) and all(issue.code in TRANSIENT_CODES for issue in outcome.errors)


def run_check(check: Check, spec: dict[str, Any], settings: Settings) -> tuple[PhaseOutcome, datetime]:
    """One check, tried again after a backoff while it fails transiently (CHECK_RETRIES times at most)."""
    delays = backoff(CHECK_RETRIES)
    for attempt in range(CHECK_RETRIES + 1):
        outcome, started_at = timed(lambda: check(spec, settings))
        if outcome.passed or not transient(outcome) or attempt == CHECK_RETRIES:
            outcome.evidence["attempts"] = attempt + 1
            return outcome, started_at
        time.sleep(delays[attempt] * (1 + random.uniform(0, jitter())))  # noqa: S311 (spreading retries, not a secret)
    raise AssertionError("unreachable")  # pragma: no cover


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
    settings = get_settings()
    with ThreadPoolExecutor(max_workers=len(CHECKS), thread_name_prefix="endpoint-check") as pool:
        results = list(pool.map(lambda check: run_check(check, inp.spec, settings), CHECKS))
    record_outcomes(inp, results)
    report = EndpointReport(outcomes=[outcome for outcome, _ in results])
    log_phases([persisted, *report.outcomes])
    return report
