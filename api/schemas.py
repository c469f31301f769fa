"""Response models: what the API returns, documented in its OpenAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class PublishAccepted(ApiModel):
    service_id: str
    flow_run_id: str
    status: str
    status_url: str = Field(description="Poll this for progress.")


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


class ServicePage(ApiModel):
    items: list[ServiceOut]
    total: int
    offset: int
    limit: int


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
    id: str
    state: str | None = Field(description="Prefect state type, e.g. RUNNING, COMPLETED, FAILED; null if unknown.")
    state_name: str | None
    url: str = Field(description="The run in the Prefect UI.")


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


class VersionList(ApiModel):
    service_id: str
    current_version: str
    items: list[VersionOut]


class VersionAccepted(ApiModel):
    service_id: str
    version_id: str
    version: str
    flow_run_id: str
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


class History(ApiModel):
    service_id: str
    items: list[HistoryEntry]


class DeprecationAccepted(ApiModel):
    service_id: str
    flow_run_id: str
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


class ApprovalPage(ApiModel):
    items: list[ApprovalOut]
    offset: int
    limit: int


class AuditEntry(HistoryEntry):
    """A history entry with where the request came from (admins only: addresses are personal data)."""

    id: int
    service_id: str | None
    actor_ip: str | None = None
    user_agent: str | None = None


class AuditPage(ApiModel):
    items: list[AuditEntry]
    total: int
    offset: int
    limit: int


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
