"""Domain vocabulary: lifecycle states, pipeline phases and phase outcomes."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class ServiceStatus(StrEnum):
    SUBMITTED = "submitted"
    VALIDATING = "validating"
    TESTING = "testing"
    PENDING_APPROVAL = "pending_approval"
    ACTIVE = "active"
    DEPRECATED = "deprecated"
    RETIRED = "retired"
    FAILED = "failed"
    SUPERSEDED = "superseded"  # a version only: replaced by a newer active version
    SUSPENDED = "suspended"  # taken out of the marketplace by an admin; the suspension can be lifted


# Lifecycle edges. `failed` is reachable from every step before `active`.
_PRE_ACTIVE = {ServiceStatus.SUBMITTED, ServiceStatus.VALIDATING, ServiceStatus.TESTING, ServiceStatus.PENDING_APPROVAL}
ALLOWED_TRANSITIONS: dict[ServiceStatus, set[ServiceStatus]] = {
    ServiceStatus.SUBMITTED: {ServiceStatus.VALIDATING},
    ServiceStatus.VALIDATING: {ServiceStatus.TESTING},
    ServiceStatus.TESTING: {ServiceStatus.PENDING_APPROVAL, ServiceStatus.ACTIVE},
    ServiceStatus.PENDING_APPROVAL: {ServiceStatus.ACTIVE},
    ServiceStatus.ACTIVE: {ServiceStatus.DEPRECATED, ServiceStatus.SUPERSEDED, ServiceStatus.SUSPENDED},
    ServiceStatus.DEPRECATED: {
        ServiceStatus.RETIRED,
        ServiceStatus.ACTIVE,
        ServiceStatus.SUPERSEDED,
        ServiceStatus.SUSPENDED,
    },
    # Lifting a suspension returns to where it was; a deprecated service still retires at its sunset.
    ServiceStatus.SUSPENDED: {ServiceStatus.ACTIVE, ServiceStatus.DEPRECATED, ServiceStatus.RETIRED},
    ServiceStatus.RETIRED: set(),
    ServiceStatus.FAILED: set(),
    ServiceStatus.SUPERSEDED: set(),
}
IN_PIPELINE = frozenset(_PRE_ACTIVE)
LIVE = frozenset({ServiceStatus.ACTIVE, ServiceStatus.DEPRECATED})
for _status in _PRE_ACTIVE:
    ALLOWED_TRANSITIONS[_status].add(ServiceStatus.FAILED)


def can_transition(current: ServiceStatus, target: ServiceStatus) -> bool:
    """Whether the lifecycle allows moving from `current` to `target`."""
    return target in ALLOWED_TRANSITIONS[current]


class Audience(StrEnum):
    """Who a webhook notification goes to."""

    GOVERNANCE = "governance"  # the configured governance URLs
    CONSUMERS = "consumers"  # the service's subscribers


class Phase(StrEnum):
    """Pipeline phases, in the order the publish flow runs them."""

    SUBMISSION = "submission"
    METADATA_VALIDATION = "metadata_validation"
    OPENAPI_VALIDATION = "openapi_validation"
    POLICY_COMPLIANCE = "policy_compliance"
    REGISTRY_SYNC = "registry_sync"
    PERSISTENCE = "persistence"
    ENDPOINT_TESTS = "endpoint_tests"
    APPROVAL = "approval"
    ACTIVATION = "activation"
    ROLLBACK = "rollback"


class Outcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def blocks(self) -> bool:
        """Critical and high violations block publication; the rest are warnings."""
        return self in (Severity.CRITICAL, Severity.HIGH)


class Issue(BaseModel):
    """One finding of a phase: where in the spec, what is wrong, how to fix it."""

    code: str = Field(description="Stable machine-readable identifier, e.g. 'semver' or a policy id.")
    message: str
    pointer: str = Field(default="", description="JSON pointer into the submitted spec, '' for the whole spec.")
    severity: Severity = Severity.HIGH
    remediation: str | None = None


class PhaseOutcome(BaseModel):
    """What a phase (or one check of a phase) found."""

    phase: Phase
    check: str | None = Field(default=None, description="Sub-check name, e.g. 'health' within endpoint_tests.")
    outcome: Outcome
    errors: list[Issue] = Field(default_factory=list, description="Findings that block publication.")
    warnings: list[Issue] = Field(default_factory=list, description="Findings kept on the record, non-blocking.")
    evidence: dict[str, Any] = Field(default_factory=dict, description="What was observed (status codes, timings).")
    duration_ms: float = 0.0

    @property
    def passed(self) -> bool:
        return self.outcome is not Outcome.FAILED

    @classmethod
    def from_issues(cls, phase: Phase, issues: list[Issue], check: str | None = None, **evidence: Any) -> PhaseOutcome:
        """Split issues into blocking errors and warnings by severity."""
        errors = [i for i in issues if i.severity.blocks]
        warnings = [i for i in issues if not i.severity.blocks]
        return cls(
            phase=phase,
            check=check,
            outcome=Outcome.FAILED if errors else Outcome.PASSED,
            errors=errors,
            warnings=warnings,
            evidence=evidence,
        )


def requires_approval(spec: dict[str, Any]) -> bool:
    """Confidential/restricted data or enterprise support need a governance decision."""
    level = spec.get("compliance", {}).get("level")
    support = spec.get("sla", {}).get("supportLevel")
    return level in ("confidential", "restricted") or support == "enterprise"
