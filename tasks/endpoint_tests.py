"""Phase 7 as Prefect tasks: one task per endpoint check, submitted in parallel by the publish flow.

A failed check is recorded (run_phase) and then raised as EndpointCheckFailed so Prefect retries
it; only transient failures (unreachable, timeout, 5xx, a slow latency probe) are retried,
because an open auth endpoint or a schema mismatch will not fix itself in a few seconds.
After the last attempt the flow catches EndpointCheckFailed and reads `.outcome`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import Task, task
from prefect.client.schemas.objects import State, TaskRun

from core.domain import Phase, PhaseOutcome
from core.settings import Settings, get_settings
from tasks._common import SpecInput, backoff, jitter, run_phase
from tasks.endpoint_checks import (
    TRANSIENT_CODES,
    check_auth,
    check_health,
    check_latency,
    check_security,
)
from tasks.endpoint_conformance import check_conformance

__all__ = [
    "ENDPOINT_TEST_TASKS",
    "EndpointCheckFailed",
    "auth_check",
    "check_auth",
    "check_conformance",
    "check_health",
    "check_latency",
    "check_security",
    "conformance_check",
    "health_check",
    "latency_check",
    "security_check",
]

Check = Callable[[dict[str, Any], Settings], PhaseOutcome]


class EndpointCheckFailed(Exception):
    """A check's outcome was FAILED; raised so Prefect retries, carrying the outcome for the flow."""

    def __init__(self, outcome: PhaseOutcome) -> None:
        # The outcome is the only argument so the exception pickles (Prefect may persist it).
        super().__init__(outcome)
        self.outcome = outcome

    def __str__(self) -> str:
        problems = "; ".join(f"{issue.code}: {issue.message}" for issue in self.outcome.errors)
        return f"endpoint check {self.outcome.check!r} failed: {problems}"

    @property
    def transient(self) -> bool:
        """Whether a retry could pass: every blocking issue is of a transient kind."""
        return bool(self.outcome.errors) and all(issue.code in TRANSIENT_CODES for issue in self.outcome.errors)


def retry_if_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect retry condition: retry transient check failures and any unexpected exception."""
    error = state.data  # the engine hands over Failed(data=<the exception>)
    return not isinstance(error, EndpointCheckFailed) or error.transient


def _run(inp: SpecInput, check: Check) -> PhaseOutcome:
    outcome = run_phase(inp, lambda: check(inp.spec, get_settings()), Phase.ENDPOINT_TESTS)
    if not outcome.passed:
        raise EndpointCheckFailed(outcome)
    return outcome


_OPTIONS: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": backoff(3),
    "retry_jitter_factor": jitter(),
    "retry_condition_fn": retry_if_transient,
    "timeout_seconds": 60,
    # Prefect's default cache policy (inputs + task source + flow run id): a run resumed after
    # approval reuses these results instead of probing again; failed attempts are never cached,
    # so a retry does probe, and another run never sees them.
}


@task(name="endpoint-test-health", **_OPTIONS)
def health_check(inp: SpecInput) -> PhaseOutcome:
    """The health URL answers 2xx within the timeout."""
    return _run(inp, check_health)


@task(name="endpoint-test-auth", **_OPTIONS)
def auth_check(inp: SpecInput) -> PhaseOutcome:
    """A call without credentials is refused with 401 or 403."""
    return _run(inp, check_auth)


@task(name="endpoint-test-conformance", **_OPTIONS)
def conformance_check(inp: SpecInput) -> PhaseOutcome:
    """Parameterless GET operations answer as the submitted OpenAPI document declares."""
    return _run(inp, check_conformance)


@task(name="endpoint-test-security", **_OPTIONS)
def security_check(inp: SpecInput) -> PhaseOutcome:
    """TLS 1.2+ with a trusted certificate and the usual security headers."""
    return _run(inp, check_security)


@task(name="endpoint-test-latency", **_OPTIONS)
def latency_check(inp: SpecInput) -> PhaseOutcome:
    """The p95 latency of the health URL stays within the promised SLA."""
    return _run(inp, check_latency)


ENDPOINT_TEST_TASKS = (health_check, auth_check, conformance_check, security_check, latency_check)
