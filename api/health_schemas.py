"""Response models of a service's health (the monitor's checks and verdict)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from api.schemas import ApiModel, ObservedSla


class PromisedSla(ApiModel):
    availability: float | None = Field(description="Promised availability in percent (spec `sla.availability`).")
    max_latency_ms: int | None = Field(description="Promised p95 latency (spec `sla.maxLatencyMs`).")


class HealthCheckOut(ApiModel):
    """One check: the probes, the gateway's traffic of its window, the verdict."""

    id: int
    slot: datetime = Field(description="Start of the interval the check stands for.")
    checked_at: datetime
    service_status: str = Field(description="The service's status when it was checked.")
    health_ok: bool
    health_status: int | None
    health_ms: float | None
    call_ok: bool | None = Field(
        description="The authenticated minimal call succeeded (not 5xx, 401, 403 or unreachable); "
        "null: not made, no credential stored."
    )
    call_status: int | None
    call_ms: float | None
    requests: int = Field(description="Gateway calls of the window that reached the provider.")
    errors: int = Field(description="Of which failed (5xx, broken off, timed out).")
    availability: float
    latency_p95_ms: float | None
    breached: bool
    reasons: list[str]
    action: str | None = Field(description="suspended or reinstated, when this check moved the service.")


class ServiceHealthOut(ApiModel):
    """Where a service stands with the health monitor, what it promised and what was observed."""

    service_id: str
    status: str = Field(description="The service's lifecycle status.")
    state: str | None = Field(description="healthy, breaching, suspended or recovering (null: never checked).")
    suspended_by_monitor: bool = Field(description="Suspended automatically; reinstated automatically on recovery.")
    consecutive_breaches: int
    consecutive_healthy: int
    checks_to_suspend: int = Field(
        description="Consecutive breaching checks that suspend (and healthy ones that reinstate)."
    )
    interval_seconds: int
    suspended_at: datetime | None
    reinstated_at: datetime | None
    sla: PromisedSla
    observed: ObservedSla
    checks: list[HealthCheckOut] = Field(description="The latest checks, newest first.")
