"""Provider health: every interval, probe each callable service, judge it with the gateway's real
traffic against its SLA, and suspend or reinstate it automatically (docs/provider-health.md).

Safe to run twice: each check is keyed by its service and interval, so a retried or repeated run
for the same moment records nothing new and moves nothing; notifications carry the check's id,
so a repeat finds the deliveries made before instead of sending again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from core.domain import Audience
from tasks.context import flow_context
from tasks.health import (
    CheckInput,
    CheckResult,
    batches,
    list_monitored_services,
    probe_services,
    record_health_checks,
)
from tasks.indexing import ServiceRef, sync_search_entry
from tasks.notify import NotificationInput, notify

# Batches probed side by side (each probes `probe_concurrency` services at once). Fixed when the
# decorator runs, like the tasks' retries.
BATCHES_AT_ONCE = 2
EVENTS = {"suspended": "service_suspended", "reinstated": "service_updated"}


@flow(
    name="monitor-services",
    flow_run_name="monitor services",
    retries=0,
    log_prints=False,
    task_runner=ThreadPoolTaskRunner(max_workers=BATCHES_AT_ONCE),  # type: ignore[arg-type]
)
def monitor_services(at: datetime | None = None) -> dict[str, int]:
    """Probe every callable service, judge it against its SLA with the gateway's traffic, suspend or reinstate."""
    moment = at or _scheduled_start()
    run_id = flow_run.get_id()
    groups = batches(list_monitored_services(), flow_context().settings.health.batch_size)
    probes = probe_services.map(groups)
    results: list[CheckResult] = []
    failed: list[str] = []
    for group, probed in zip(groups, probes, strict=True):
        # one batch's trouble (its tasks failed after their retries) does not cost the others their check
        try:
            inputs = [
                CheckInput(target=target, probes=report, at=moment, flow_run_id=run_id)
                for target, report in zip(group, probed.result(), strict=True)
            ]
            recorded = record_health_checks(inputs)
            results += recorded.results
            failed += recorded.failed
        except Exception:
            get_run_logger().exception("no checks recorded for a batch of %d services", len(group))
            failed += [target.service_id for target in group]
    for result in results:
        if result.action:
            _follow_move(result)
    _report(results, moment)
    if failed:  # the run shows failed in the UI; the next interval checks them again
        raise RuntimeError(f"no check recorded for {len(failed)} services: {', '.join(failed)}")
    return _counts(results)


def _scheduled_start() -> datetime:
    """The run's scheduled time (a retried run keeps it, so it checks the same interval), else now."""
    scheduled = flow_run.get_scheduled_start_time()
    return datetime.fromtimestamp(scheduled.timestamp(), UTC) if scheduled else datetime.now(UTC)


def _follow_move(result: CheckResult) -> None:
    """After a suspension or reinstatement: the search index follows, governance and subscribers are told."""
    log = get_run_logger()
    if not result.repeated:
        log.warning("%s %s (%s): %s", result.action, result.name, result.service_id, result.reason)
    sync_search_entry(ServiceRef(service_id=result.service_id, flow_run_id=flow_run.get_id()))
    data = {"reason": result.reason, "healthCheckId": result.check_id, "availability": result.availability}
    for audience in (Audience.GOVERNANCE, Audience.CONSUMERS):
        inp = NotificationInput(
            service_id=result.service_id, event_type=EVENTS[str(result.action)], audience=audience, data=data
        )
        state = notify(inp, return_state=True)  # best effort: every attempt is recorded either way
        if state.is_failed():
            log.error("%s notification to %s failed", inp.event_type, audience.value)


def _report(results: list[CheckResult], moment: datetime) -> None:
    """A table on the run's page in the Prefect UI: each service's verdict of this interval."""
    rows: list[dict[str, Any]] = [
        {
            "service": f"{r.name} ({r.service_id})",
            "state": r.state,
            "availability %": r.availability,
            "p95 ms": r.latency_p95_ms,
            "breached": r.breached,
            "action": (r.action or "") + (" (earlier run)" if r.repeated and r.action else ""),
            "why": "; ".join(r.reasons),
        }
        for r in results
    ]
    description = f"Health of {len(results)} services, window ending {moment.isoformat()}"
    create_table_artifact(rows, key="service-health", description=description)


def _counts(results: list[CheckResult]) -> dict[str, int]:
    return {
        "checked": sum(1 for r in results if not r.repeated and r.check_id is not None),
        "repeated": sum(1 for r in results if r.repeated),
        "breached": sum(1 for r in results if r.breached),
        "suspended": sum(1 for r in results if r.action == "suspended" and not r.repeated),
        "reinstated": sum(1 for r in results if r.action == "reinstated" and not r.repeated),
    }
