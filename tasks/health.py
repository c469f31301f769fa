"""Thin tasks of the `monitor-services` flow: what to check, the probes, recording each verdict.

The probes (checks/health_probes.py) never raise for a provider's failure: a failure is data. The
tasks retry only what is ours to retry (the database). `record_health_check` stores the check and
any move it causes in one transaction (storage/repositories/health.py), keyed by the interval, so
a retried task or a rerun flow counts nothing twice.

The flow works in batches (`health.batch_size` services a task): one task run per service and
step would be two task runs per service every minute, and each costs the Prefect server more than
the probe itself (a thousand services: two thousand task runs a minute). A batch keeps each
service apart where it matters: probes run side by side, each service is recorded in its own
transaction with its own retries, and one service's failure is reported, not spread.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import get_run_logger, task
from pydantic import BaseModel, Field

from checks.health_probes import ProbeReport, probe
from core.sla import Probes, Promise, judge
from storage.database import session_scope
from storage.encryption import box_for
from storage.health_models import ServiceHealthCheck
from storage.repositories import credentials, health, service_signals
from tasks._common import RetryDelays, backoff, jitter
from tasks.context import flow_context


class MonitorTarget(BaseModel):
    """A service to check, as its spec describes it (no credential: that is read in the probe task)."""

    service_id: str
    name: str
    version: str
    status: str
    provider_id: str
    endpoint: dict[str, Any] = Field(default_factory=dict)
    sla: dict[str, Any] = Field(default_factory=dict)


class CheckInput(BaseModel):
    target: MonitorTarget
    probes: ProbeReport
    at: datetime = Field(description="The moment the check stands for: its traffic window ends here.")
    flow_run_id: str | None = None


class CheckResult(BaseModel):
    service_id: str
    name: str
    check_id: int | None
    state: str
    status: str
    breached: bool
    availability: float | None
    latency_p95_ms: float | None = None
    reasons: list[str] = Field(default_factory=list)
    action: str | None = None
    reason: str | None = None
    repeated: bool = False


def slot_of(at: datetime, interval_seconds: int) -> datetime:
    """The start of the interval `at` falls in: one check per service per interval."""
    epoch = int(at.timestamp())
    return datetime.fromtimestamp(epoch - epoch % interval_seconds, UTC)


@task(name="list-monitored-services", retries=3, retry_delay_seconds=backoff(3), retry_jitter_factor=jitter())
def list_monitored_services() -> list[MonitorTarget]:
    """Active and deprecated services, and those the monitor suspended (to see them recover)."""
    with session_scope() as session:
        return [MonitorTarget(**vars(t)) for t in health.monitored(session)]


class RecordedBatch(BaseModel):
    results: list[CheckResult] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list, description="Services whose check could not be stored")


def batches(targets: Sequence[MonitorTarget], size: int) -> list[list[MonitorTarget]]:
    return [list(targets[i : i + size]) for i in range(0, len(targets), size)]


@task(name="probe-services", retries=2, retry_delay_seconds=backoff(2), retry_jitter_factor=jitter())
def probe_services(targets: list[MonitorTarget]) -> list[ProbeReport]:
    """Each service's health endpoint and an authenticated minimal call, `probe_concurrency` at once
    (the credentials decrypted here, in memory only); a retry (database errors) probes the batch again."""
    settings = flow_context().settings
    box = box_for(settings.consumption)
    calls: list[tuple[dict[str, Any], tuple[str, str] | None, Sequence[str]]] = []
    with session_scope() as session:
        for target in targets:
            stored = credentials.load_credential(session, target.service_id, box)
            secrets = credentials.live_signing_secrets(session, target.service_id, box, datetime.now(UTC))
            credential = (stored.header_name, stored.header_value) if stored is not None else None
            calls.append((target.endpoint, credential, secrets))

    def probe_one(call: tuple[dict[str, Any], tuple[str, str] | None, Sequence[str]]) -> ProbeReport:
        return probe(call[0], call[1], call[2], settings)

    with ThreadPoolExecutor(max_workers=settings.health.probe_concurrency, thread_name_prefix="probe") as pool:
        return list(pool.map(probe_one, calls))


@task(name="record-health-checks", retries=2, retry_delay_seconds=backoff(2), retry_jitter_factor=jitter())
def record_health_checks(inputs: list[CheckInput]) -> RecordedBatch:
    """Record each service's check in its own transaction, retrying it alone; the services that still
    failed are listed (and logged), the others' checks stand."""
    outcome = RecordedBatch()
    delays = RetryDelays(3)
    for inp in inputs:
        for attempt in range(len(delays) + 1):
            try:
                outcome.results.append(record_health_check(inp))
                break
            except Exception:
                if attempt == len(delays):
                    get_run_logger().exception("no check recorded for %s (%s)", inp.target.name, inp.target.service_id)
                    outcome.failed.append(inp.target.service_id)
                else:
                    time.sleep(delays[attempt])
    return outcome


def record_health_check(inp: CheckInput) -> CheckResult:
    """Judge the probes and the window's traffic against the SLA; store the check; suspend or reinstate."""
    settings = flow_context().settings.health
    target, p = inp.target, inp.probes
    promise = Promise.of({"sla": target.sla})
    with session_scope() as session:
        window = timedelta(seconds=settings.window)
        traffic = health.traffic(session, target.service_id, inp.at - window, inp.at)
        verdict = judge(promise, Probes(p.health_ok, p.health_ms, p.call_ok, p.call_ms), traffic)
        check = ServiceHealthCheck(
            service_id=target.service_id,
            slot=slot_of(inp.at, settings.interval_seconds),
            checked_at=datetime.now(UTC),
            flow_run_id=inp.flow_run_id,
            service_status=target.status,
            health_ok=p.health_ok,
            health_status=p.health_status,
            health_ms=p.health_ms,
            call_ok=p.call_ok,
            call_status=p.call_status,
            call_ms=p.call_ms,
            probe_errors=p.errors,
            requests=traffic.requests,
            errors=traffic.errors,
            successes=verdict.successes,
            attempts=verdict.attempts,
            availability=verdict.availability,
            latency_p95_ms=verdict.latency_p95_ms,
            sla_availability=promise.availability,
            sla_latency_ms=promise.max_latency_ms,
            breached=verdict.breached,
            reasons=[*verdict.reasons, *p.errors],
        )
        outcome = health.apply_check(session, check, settings.consecutive_checks)
        if outcome.check_id is not None:  # search ranks and filters by what the monitor observes
            span = settings.observed_window_seconds
            _publish_signals(session, target.service_id, inp.at, verdict.latency_p95_ms, span)
    return CheckResult(
        name=target.name,
        latency_p95_ms=verdict.latency_p95_ms,
        reasons=[*verdict.reasons, *p.errors],
        **vars(outcome),
    )


def _publish_signals(session: Any, service_id: str, at: datetime, latency_p95_ms: float | None, span: int) -> None:
    """The service's observed availability over the span shown with it, and this check's latency p95, as
    the search signals (storage/repositories/service_signals.py), in the check's transaction."""
    seen = health.observed(session, [service_id], at - timedelta(seconds=span)).get(service_id)
    availability = seen.availability if seen else None
    if latency_p95_ms is None:  # no successful call in the window: the last latency known stays
        service_signals.upsert(session, service_id, availability=availability)
    else:
        service_signals.upsert(session, service_id, availability=availability, latency_p95_ms=latency_p95_ms)
