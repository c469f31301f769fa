"""Response models: what the API returns, documented in its OpenAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

Item = TypeVar("Item")


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class Page(ApiModel, Generic[Item]):
    """The one list envelope of the API: a page of items, how many there are, and which page this is."""

    items: list[Item]
    total: int = Field(description="Items matching the request, over all pages.")
    offset: int = Field(description="Items skipped before this page.")
    limit: int = Field(description="The most items a page holds.")


QUEUED_RUN = (
    "The flow run is started from the stored request right after the answer, with retries while Prefect is "
    "busy or down: null until then (the status report says `QUEUED`)."
)


class PublishAccepted(ApiModel):
    service_id: str
    flow_run_id: str | None = Field(description=QUEUED_RUN)
    status: str
    status_url: str = Field(description="Poll this for progress.")


class ObservedSla(ApiModel):
    """What the health monitor observed of a service (docs/provider-health.md)."""

    availability: float | None = Field(
        description="Percent of probes and gateway calls that succeeded over the window (null: no check yet)."
    )
    window_seconds: int = Field(description="The span the availability covers, ending now.")
    checks: int = Field(description="Health checks in the window.")
    latency_p95_ms: float | None = Field(description="p95 latency of the latest check.")
    state: str | None = Field(description="healthy, breaching, suspended or recovering (null: never checked).")
    checked_at: datetime | None = Field(description="When the latest check ran.")


class ServiceOut(ApiModel):
    id: str
    name: str
    version: str
    description: str
    provider_id: str
    provider_name: str
    category: str
    tags: list[str]
    status: str
    current_phase: str | None
    failure_phase: str | None
    failure_reason: str | None
    registry_id: str | None
    flow_run_id: str | None
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None
    deprecated_at: datetime | None
    sunset_at: datetime | None
    archived_at: datetime | None
    retirement_flow_run_id: str | None
    spec: dict[str, Any]
    observed_sla: ObservedSla | None = Field(
        default=None, description="Availability and latency the health monitor observed (GET of one service only)."
    )


class ServicePage(Page[ServiceOut]):
    """A page of services, newest first."""


class Finding(ApiModel):
    code: str
    message: str
    pointer: str = ""
    severity: str
    remediation: str | None = None
    phase: str | None = None


class PhaseResultOut(ApiModel):
    phase: str
    check: str | None
    outcome: str
    started_at: datetime
    duration_ms: float
    errors: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    evidence: dict[str, Any]


class FlowRunOut(ApiModel):
    id: str | None = Field(description="The Prefect flow run; null while its start is queued.")
    state: str | None = Field(
        description="Prefect state type, e.g. RUNNING, COMPLETED, FAILED; null if unknown; `QUEUED` (ours) while "
        "the request waits for Prefect to create the run."
    )
    state_name: str | None
    url: str | None = Field(description="The run in the Prefect UI (null while queued).")
    start_attempts: int | None = Field(default=None, description="While queued: attempts to start the run so far.")
    last_start_error: str | None = Field(default=None, description="While queued: why the last attempt failed.")


class FailureOut(ApiModel):
    phase: str | None
    reason: str | None


class ServiceStatusOut(ApiModel):
    service_id: str
    status: str = Field(description="The service's lifecycle status.")
    version: str = Field(description="The version this report is about: the latest one submitted.")
    version_status: str = Field(description="That version's status (differs while a new version is published).")
    current_phase: str | None
    requires_approval: bool
    published_at: datetime | None
    deprecated_at: datetime | None
    sunset_at: datetime | None
    failure: FailureOut | None
    errors: list[str]
    violations: list[Finding] = Field(description="Blocking policy violations.")
    warnings: list[Finding] = Field(description="Non-blocking findings of every phase.")
    phases: list[PhaseResultOut]
    flow_run: FlowRunOut | None


class Health(ApiModel):
    status: str
    service: str
    version: str
    timestamp: datetime


class Readiness(ApiModel):
    status: str
    checks: dict[str, str]


class VersionOut(ApiModel):
    id: str
    version: str
    status: str
    current_phase: str | None
    failure_phase: str | None
    failure_reason: str | None
    registry_id: str | None
    flow_run_id: str | None
    created_at: datetime
    published_at: datetime | None


class VersionList(Page[VersionOut]):
    """A page of a service's versions, oldest first."""

    service_id: str
    current_version: str


class VersionAccepted(ApiModel):
    service_id: str
    version_id: str
    version: str
    flow_run_id: str | None = Field(description=QUEUED_RUN)
    status: str
    status_url: str


class HistoryEntry(ApiModel):
    at: datetime = Field(validation_alias="occurred_at")
    action: str
    from_status: str | None
    to_status: str | None
    actor: str
    actor_role: str | None
    reason: str | None
    flow_run_id: str | None
    details: dict[str, Any]
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


class History(Page[HistoryEntry]):
    """A page of a service's status history, oldest first."""

    service_id: str


class DeprecationAccepted(ApiModel):
    service_id: str
    flow_run_id: str | None = Field(description=QUEUED_RUN)
    status: str = Field(description="`deprecating` until the flow has marked the service `deprecated`.")
    grace_seconds: int


class DecisionIn(ApiModel):
    decision: str = Field(pattern="^(approve|reject)$", description="approve or reject")
    comment: str = Field(default="", max_length=4000)


class DecisionAccepted(ApiModel):
    service_id: str
    version: str
    flow_run_id: str
    decision: str
    reviewer: str


class ApprovalOut(ApiModel):
    id: str
    service_id: str
    service_name: str
    version: str
    status: str
    requested_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    reviewer: str | None
    comment: str | None
    flow_run: FlowRunOut
    phases: list[PhaseResultOut]
    violations: list[Finding]
    warnings: list[Finding]


class ApprovalPage(Page[ApprovalOut]):
    """A page of the approval queue, oldest request first."""


class AuditEntry(HistoryEntry):
    """A history entry with where the request came from (admins only: addresses are personal data)."""

    id: int
    service_id: str | None
    consumer_id: str | None = None
    actor_ip: str | None = None
    user_agent: str | None = None


class AuditPage(Page[AuditEntry]):
    """A page of the audit trail, newest first."""


class SuspensionIn(ApiModel):
    reason: str = Field(min_length=3, max_length=2000, description="Why the service is taken out (audited).")


class UsageOut(ApiModel):
    """One call through the gateway."""

    request_id: str
    occurred_at: datetime
    consumer_id: str
    key_id: str
    service_id: str
    service_version: str
    subscription_id: str | None
    route: str
    status: int
    latency_ms: float
    ttfb_ms: float | None = Field(description="Time to the provider's first byte.")
    input_tokens: int
    output_tokens: int
    cost: str = Field(description="Decimal amount, as a string (never a float).")
    currency: str
    stream: bool
    error: str | None


class UsageTotals(ApiModel):
    requests: int
    input_tokens: int
    output_tokens: int
    cost: dict[str, str] = Field(description="Amount per currency, decimal strings.")


class UsagePage(ApiModel):
    items: list[UsageOut]
    total: int
    offset: int
    limit: int
    totals: UsageTotals = Field(description="Over every record in the range, not only this page.")
