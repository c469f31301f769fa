"""What the routes do: submit services and versions, update, deprecate. Routes stay thin."""

from __future__ import annotations

from typing import Any

import semver
from sqlalchemy.orm import Session

from api import intake, spec_checks
from api.orchestrator import Orchestrator
from checks.openapi import reference_issues
from checks.policy import check_policies
from checks.validation import validate_metadata
from core.domain import LIVE, ServiceStatus
from core.errors import ConflictError, SpecValidationError
from core.settings import Settings
from storage import intake_writer
from storage.database import session_scope
from storage.intake_writer import NewRows
from storage.models import Service, ServiceVersion, new_id
from storage.repositories import approvals, audit, outbox, run_requests, services, versions
from storage.repositories.services import Actor, event_data
from storage.search import document_from_service, get_search_index

# Changed in place by PUT; anything else (endpoint, compliance, OpenAPI ...) needs a new version.
METADATA_FIELDS = frozenset({"description", "tags", "capabilities", "pricing", "sla", "category"})
IDENTITY_FIELDS = frozenset({"name", "provider"})


def require_valid_schema(spec: dict[str, Any], settings: Settings) -> None:
    """422 listing every JSON Schema error with its pointer; a non-public endpoint host; then the OpenAPI
    document's references (remote and file: refs, cycles, fan-out), so a hostile document is refused
    before it is stored."""
    spec_checks.require_schema(spec)
    spec_checks.require_public_endpoint(spec, settings)
    problems = reference_issues(spec, settings)
    if problems:
        details = [{"pointer": p.pointer, "message": p.message, "code": p.code} for p in problems]
        raise SpecValidationError("the OpenAPI document cannot be accepted", details)


def submit_service(spec: dict[str, Any], actor: Actor, settings: Settings) -> tuple[str, str]:
    """Store a new service as `submitted` together with the publish run it is owed, in one transaction;
    returns (service id, version id). The run is started by the run starter after the commit
    (api/run_starter.py): nothing here waits for Prefect, and a duplicate gets its 409 at once.
    Submissions arriving together share that transaction (storage/intake_writer.py: group commit).
    """
    require_valid_schema(spec, settings)
    service_id, version_id = new_id(), new_id()
    owed = run_requests.request(intake.publish_run(settings.prefect, service_id, version_id, spec))
    rows = NewRows(
        objects=[*services.submission(spec, actor, service_id, version_id), owed],
        unique_key=(spec["name"], spec["version"]),
        clash=services.duplicate_error(spec),
        service_ids=[service_id],
        after_commit=[run_requests.announce],
    )
    intake_writer.write(rows)
    return service_id, version_id


def submit_version(service_id: str, spec: dict[str, Any], actor: Actor, settings: Settings) -> ServiceVersion:
    """A new version of a live service through the same pipeline; the old one serves until it is active."""
    require_valid_schema(spec, settings)
    with session_scope() as session:
        service = services.get(session, service_id, for_update=True)
        if service.status != ServiceStatus.ACTIVE.value:
            raise ConflictError(f"service {service_id} is {service.status}; new versions need an active service")
        if spec["name"] != service.name:
            raise SpecValidationError("a new version keeps the service's name", [_detail("/name", service.name)])
        if spec["provider"]["id"] != service.provider_id:
            raise SpecValidationError(
                "a new version keeps the service's provider", [_detail("/provider/id", service.provider_id)]
            )
        pending = versions.in_flight(session, service_id)
        if pending is not None:
            raise ConflictError(f"version {pending.version} is still being published ({pending.status})")
        _require_greater_version(
            spec["version"],
            [v.version for v in versions.for_service(session, service_id) if v.status != ServiceStatus.FAILED.value],
            settings,
        )
        version = versions.create_next(session, service, spec, actor)
        intake.owe(session, intake.publish_run(settings.prefect, service_id, version.id, spec))
    return version


def _require_greater_version(candidate: str, existing: list[str], settings: Settings) -> None:
    try:
        parsed = semver.Version.parse(candidate)
    except ValueError as exc:
        raise SpecValidationError("version is not semantic", [_detail("/version", str(exc))]) from exc
    if parsed.prerelease and settings.is_production:
        raise SpecValidationError(
            "prerelease versions are not published in production", [_detail("/version", candidate)]
        )
    highest = max((semver.Version.parse(v) for v in existing), default=None)
    if highest is not None and parsed <= highest:
        raise SpecValidationError(
            f"version {candidate} must be greater than {highest}", [_detail("/version", f"must be > {highest}")]
        )


def update_metadata(
    service_id: str, changes: dict[str, Any], actor: Actor, settings: Settings
) -> ServiceVersion | None:
    """Apply metadata in place (re-validated, policy-checked, the registry sync owed in the same
    transaction), or hand a version change to the version flow: returns the new version then."""
    spec_checks.require_known_fields(changes)
    with session_scope() as session:
        service = services.get(session, service_id)
        merged = {**service.spec, **changes}
    if "version" in changes and changes["version"] != service.version:
        return submit_version(service_id, merged, actor, settings)
    _require_metadata_only(changes)
    require_valid_schema(merged, settings)
    _require_checks_pass(merged, settings)
    with session_scope() as session:
        service = services.get(session, service_id, for_update=True)
        if ServiceStatus(service.status) not in LIVE:
            raise ConflictError(f"service {service_id} is {service.status}; only live services are updated in place")
        before = {field: service.spec.get(field) for field in changes}
        service.spec = merged
        service.description = merged["description"]
        service.category = merged["category"]
        service.tags = list(merged.get("tags", []))
        current = next(v for v in versions.for_service(session, service_id) if v.version == service.version)
        current.spec = merged
        audit.append(
            session,
            service_id=service_id,
            action="metadata_updated",
            **actor.audit_origin(),
            reason="metadata updated",
            before=before,
            after=changes,
        )
        outbox.add(
            session,
            aggregate_id=service_id,
            event_type="service_updated",
            data=event_data(service, "metadata updated", changed=sorted(changes)),
        )
        _owe_registry_sync(session, service, settings)
    refresh_search_entry(service_id, settings)
    return None


def refresh_search_entry(service_id: str, settings: Settings | None = None) -> None:
    """After a change made here (not by a flow), re-index the live service's document."""
    with session_scope() as session:
        document = document_from_service(services.get(session, service_id))
    get_search_index(settings).index(document)


def _require_metadata_only(changes: dict[str, Any]) -> None:
    details = [
        _detail(
            f"/{field}",
            "cannot change; it identifies the service"
            if field in IDENTITY_FIELDS
            else "changing it needs a new version: POST /api/v1/services/{id}/versions",
        )
        for field in sorted(changes)
        if field not in METADATA_FIELDS and field != "version"
    ]
    if details:
        raise SpecValidationError("only metadata can change in place", details)


def _require_checks_pass(spec: dict[str, Any], settings: Settings) -> None:
    """The same metadata and policy rules the pipeline applies, run synchronously (milliseconds)."""
    problems = [*validate_metadata(spec, settings).errors, *check_policies(spec, settings).errors]
    if problems:
        details = [{"pointer": p.pointer, "message": p.message, "code": p.code} for p in problems]
        raise SpecValidationError("the updated service breaks the marketplace's rules", details)


def _detail(pointer: str, message: str) -> dict[str, str]:
    return {"pointer": pointer, "message": message}


def deprecate(service_id: str, actor: Actor, settings: Settings) -> int:
    """Owe the deprecation run of an active service (it marks the service and schedules the
    retirement), audited in the same transaction; returns the grace period in seconds."""
    grace = settings.lifecycle.deprecation_grace_seconds
    with session_scope() as session:
        service = services.get(session, service_id, for_update=True)
        if service.status != ServiceStatus.ACTIVE.value:
            raise ConflictError(f"service {service_id} is {service.status}; only an active service can be deprecated")
        if run_requests.queued_for_service(session, service_id, "deprecate"):
            raise ConflictError(f"the deprecation of service {service_id} is already under way")
        reason = "deprecated by request"
        intake.owe(session, intake.deprecation_run(settings.prefect, service, actor.id, actor.role, reason, grace))
        audit.append(
            session,
            service_id=service_id,
            action="deprecation_requested",
            **actor.audit_origin(),
            reason=f"grace period {grace} s",
        )
    return grace


def reinstate(service_id: str, actor: Actor, orch: Orchestrator) -> None:
    """Withdraw a deprecation before the sunset: back to `active`, the scheduled retirement cancelled."""
    with session_scope() as session:
        service = services.get(session, service_id, for_update=True)
        if service.status != ServiceStatus.DEPRECATED.value:
            raise ConflictError(f"service {service_id} is {service.status}; only a deprecated service is reinstated")
        retirement_run = service.retirement_flow_run_id
        services.transition(
            session,
            service_id,
            ServiceStatus.ACTIVE,
            actor=actor,
            reason="deprecation withdrawn",
            event_type="service_updated",
            details={"cancelledRetirementRun": retirement_run},
        )
        services.schedule_retirement(session, service_id, None, None)
        if retirement_run:
            orch.cancel(retirement_run)  # inside the transaction: if Prefect refuses, nothing changes
    refresh_search_entry(service_id)


def suspend(service_id: str, reason: str, actor: Actor, settings: Settings) -> None:
    """Admin takes a live service out of the marketplace at once: search, registry, event, audit."""
    with session_scope() as session:
        service = services.get(session, service_id, for_update=True)
        if ServiceStatus(service.status) not in LIVE:
            raise ConflictError(f"service {service_id} is {service.status}; only a live service can be suspended")
        services.transition(
            session, service_id, ServiceStatus.SUSPENDED, actor=actor, reason=reason, event_type="service_suspended"
        )
        _owe_registry_sync(session, service, settings)
    refresh_search_entry(service_id, settings)


def lift_suspension(service_id: str, actor: Actor, settings: Settings) -> None:
    """Back to active, or to deprecated when it was deprecated (its sunset and retirement run unchanged)."""
    with session_scope() as session:
        service = services.get(session, service_id, for_update=True)
        if service.status != ServiceStatus.SUSPENDED.value:
            raise ConflictError(f"service {service_id} is {service.status}; it is not suspended")
        target = ServiceStatus.DEPRECATED if service.deprecated_at else ServiceStatus.ACTIVE
        services.transition(
            session, service_id, target, actor=actor, reason="suspension lifted", event_type="service_updated"
        )
        _owe_registry_sync(session, service, settings)
    refresh_search_entry(service_id, settings)


def _owe_registry_sync(session: Session, service: Service, settings: Settings) -> None:
    """The external registry follows a change made here (none configured: the database is the registry)."""
    if settings.registry.url:
        intake.owe(session, intake.registry_sync_run(settings.prefect, service))


def decide_approval(
    service_id: str, decision: str, comment: str, reviewer: Actor, orch: Orchestrator
) -> tuple[str, str]:
    """Resume the waiting publish run with the decision; returns (version, flow run id).

    The run records the decision when it resumes, exactly as when resumed from the Prefect UI.
    """
    with session_scope() as session:
        approval = approvals.pending_for_service(session, service_id, for_update=True)
        version = versions.get(session, approval.version_id)
        run_input = {"decision": decision, "reviewer": reviewer.id, "comment": comment}
        orch.resume_with(approval.flow_run_id, run_input)
        audit.append(
            session,
            service_id=service_id,
            action="approval_submitted",
            **reviewer.audit_origin(),
            reason=comment or decision,
            flow_run_id=approval.flow_run_id,
            details={"decision": decision, "version": version.version},
        )
        return version.version, approval.flow_run_id
