"""Deprecation with a grace period, and the retirement it schedules."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from tasks.deprecation import DeprecationInput, RetirementInput, mark_deprecated, retire, schedule_retirement


@flow(name="deprecate-service", retries=0, log_prints=False)
def deprecate_service(service_id: str, actor_id: str, actor_role: str | None, reason: str, grace_seconds: int) -> str:
    """Mark the service deprecated, tell consumers, and schedule its retirement at the end of the grace period."""
    inp = DeprecationInput(
        service_id=service_id,
        actor_id=actor_id,
        actor_role=actor_role,
        reason=reason,
        grace_seconds=grace_seconds,
        flow_run_id=flow_run.get_id(),
    )
    sunset_at = mark_deprecated(inp)
    return schedule_retirement(inp, sunset_at)


@flow(name="retire-service", retries=0, log_prints=False)
def retire_service(service_id: str) -> str:
    """At the sunset: re-check the service is still deprecated, then retire and archive it."""
    return retire(RetirementInput(service_id=service_id, flow_run_id=flow_run.get_id() or ""))
