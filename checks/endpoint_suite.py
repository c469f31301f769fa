"""Phase 7's five endpoint checks run at once, each retried on its own while its failure is transient.

Transient means unreachable, a timeout, a 5xx or a slow latency probe: those may pass a few seconds
later. An open auth endpoint or a schema mismatch will not fix itself that fast and is not retried.
The retry delays are the pipeline's exponential backoff (`settings.retries`). No Prefect here:
`tasks/endpoint_tests.py` wraps this in the task that persists the version and records the outcomes.
"""

from __future__ import annotations

import contextvars
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from checks.endpoint_checks import TRANSIENT_CODES, check_auth, check_health, check_latency, check_security
from checks.endpoint_conformance import check_conformance
from checks.timing import timed
from core import telemetry
from core.domain import PhaseOutcome
from core.settings import Settings

Check = Callable[[dict[str, Any], Settings], PhaseOutcome]
CHECKS: tuple[Check, ...] = (check_health, check_auth, check_conformance, check_security, check_latency)
CHECK_RETRIES = 3  # per check, transient failures only


def transient(outcome: PhaseOutcome) -> bool:
    """Whether a retry could pass: every blocking issue is of a transient kind."""
    return bool(outcome.errors) and all(issue.code in TRANSIENT_CODES for issue in outcome.errors)


def retry_delays(settings: Settings, retries: int) -> list[float]:
    """Exponential retry delays from the configured base: 1 s, 2 s, 4 s ... by default."""
    base = settings.retries.base_delay_seconds
    return [base * 2**attempt for attempt in range(retries)]


def run_check(check: Check, spec: dict[str, Any], settings: Settings) -> tuple[PhaseOutcome, datetime]:
    """One check, tried again after a backoff while it fails transiently (CHECK_RETRIES times at most)."""
    delays = retry_delays(settings, CHECK_RETRIES)
    for attempt in range(CHECK_RETRIES + 1):
        with telemetry.span(f"provider call: {check.__name__}", _call_attributes(spec, attempt)):
            outcome, started_at = timed(lambda: check(spec, settings))
        if outcome.passed or not transient(outcome) or attempt == CHECK_RETRIES:
            outcome.evidence["attempts"] = attempt + 1
            return outcome, started_at
        spread = 1 + random.uniform(0, settings.retries.jitter_factor)  # noqa: S311 (spreading retries, not a secret)
        time.sleep(delays[attempt] * spread)
    raise AssertionError("unreachable")  # pragma: no cover


def run_checks(spec: dict[str, Any], settings: Settings) -> list[tuple[PhaseOutcome, datetime]]:
    """Every check at once (threads), each with its own retries; outcomes in CHECKS order."""
    # Each check in a copy of the caller's context: its provider calls are child spans of the task's.
    contexts = [contextvars.copy_context() for _ in CHECKS]
    with ThreadPoolExecutor(max_workers=len(CHECKS), thread_name_prefix="endpoint-check") as pool:
        return list(pool.map(lambda ctx, check: ctx.run(run_check, check, spec, settings), contexts, CHECKS))


def _call_attributes(spec: dict[str, Any], attempt: int) -> dict[str, Any]:
    endpoint = spec.get("endpoint")
    url = endpoint.get("url") if isinstance(endpoint, dict) else None
    return {"url.full": str(url), "attempt": attempt + 1}
