"""Deprecation with a grace period, and the retirement it schedules."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from core.domain import Audience
from tasks.deprecation import DeprecationInput, RetirementInput, mark_deprecated, retire, schedule_retirement
from tasks.indexing import ServiceRef, sync_search_entry
from tasks.notify import NotificationInput, notify
from tasks.run_log import log_origin


@flow(name="deprecate-service", retries=0, log_prints=False)
def deprecate_service(service_id: str, actor_id: str, actor_role: str | None, reason: str, grace_seconds: int) -> str:
    """Mark the service deprecated, tell consumers, and schedule its retirement at the end of the grace period."""
    log_origin("deprecation started")
    inp = DeprecationInput(
        service_id=service_id,
        actor_id=actor_id,
        actor_role=actor_role,
        reason=reason,
        grace_seconds=grace_seconds,
        flow_run_id=flow_run.get_id(),
    )
    sunset_at = mark_deprecated(inp)
    retirement_run = schedule_retirement(inp, sunset_at)  # before the (slow, best-effort) notifications
    sync_search_entry(ServiceRef(service_id=service_id, flow_run_id=inp.flow_run_id))
    for audience in (Audience.GOVERNANCE, Audience.CONSUMERS):
        _notify(service_id, "service_deprecated", audience, {"sunsetAt": sunset_at, "reason": reason})
    return retirement_run


@flow(name="retire-service", retries=0, log_prints=False)
def retire_service(service_id: str) -> str:
    """At the sunset: re-check the service is still deprecated, then retire and archive it."""
    outcome = retire(RetirementInput(service_id=service_id, flow_run_id=flow_run.get_id() or ""))
    if outcome == "retired":
        sync_search_entry(ServiceRef(service_id=service_id, flow_run_id=flow_run.get_id()))
        _notify(service_id, "service_retired", Audience.CONSUMERS, {})
    return outcome


def _notify(service_id: str, event_type: str, audience: Audience, data: dict[str, Any]) -> None:
    """Webhooks are best effort here: every attempt is recorded, a failure does not undo the lifecycle step."""
    try:
        notify(
            NotificationInput(
                service_id=service_id,
                event_type=event_type,
                audience=audience,
                data=data,
                flow_run_id=flow_run.get_id(),
            )
        )
    except Exception:
        get_run_logger().exception("%s notification to %s failed", event_type, audience)
