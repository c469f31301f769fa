"""Writing the publish report artifact: once when a run ends (active, failed, compensated) or suspends
for approval, from the phase results the marketplace database already holds.

One Prefect API call per run (not per phase), made by the flow, or by whatever fails a dead run
for it (reconciliation attaches the report to the dead run). It never decides a run's fate:
a report that cannot be written is logged and the run goes on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from prefect.artifacts import MarkdownArtifact

from checks.report_markdown import PublishReport, headline, render_report, report_key
from core.domain import Issue, Outcome, Phase, PhaseOutcome, ServiceStatus
from core.errors import NotFoundError
from storage.database import session_scope
from storage.models import ValidationResult
from storage.repositories import phases, versions
from tasks._common import PhaseInput
from tasks.run_log import run_logger


def write_publish_report(
    base: PhaseInput, *, compensation: Sequence[str] = (), problems: Sequence[str] = (), missing: str | None = None
) -> None:
    """Render the version's report and attach it to its run as a markdown artifact (best effort).

    `missing`: the version is not in the database (a refused submission's run); the report says so.
    """
    try:
        report = (load_report(base, compensation, problems) if missing is None else None) or PublishReport(
            service_id=base.service_id,
            subject=f"version {base.version_id}",
            status=ServiceStatus.FAILED.value,
            failure_reason=missing or f"version {base.version_id} is not in the database",
        )
        MarkdownArtifact(
            key=report_key(base.service_id),
            description=headline(report),
            markdown=render_report(report),
            flow_run_id=UUID(base.flow_run_id) if base.flow_run_id else None,
        ).create()
    except Exception as exc:  # the Prefect API or the database unavailable: the run's outcome stands
        run_logger().warning("the publish report could not be written: %s: %s", type(exc).__name__, exc)


def load_report(
    base: PhaseInput, compensation: Sequence[str] = (), problems: Sequence[str] = ()
) -> PublishReport | None:
    """The report as the database has it now (None: the version is not stored)."""
    with session_scope() as session:
        try:
            version = versions.get(session, base.version_id)
        except NotFoundError:
            return None
        results = phases.for_service(session, base.service_id, base.flow_run_id)
        spec = version.spec
        return PublishReport(
            service_id=base.service_id,
            subject=f"{spec['provider']['id']}/{spec['name']} {version.version}",
            status=version.status,
            outcomes=[outcome_of(r) for r in results],
            failure_phase=version.failure_phase if version.status == ServiceStatus.FAILED.value else None,
            failure_reason=version.failure_reason if version.status == ServiceStatus.FAILED.value else None,
            compensation=tuple(compensation),
            compensation_problems=tuple(problems),
        )


def outcome_of(result: ValidationResult) -> PhaseOutcome:
    """A stored phase result, back as the outcome the pipeline recorded."""
    return PhaseOutcome(
        phase=Phase(result.phase),
        check=result.check_name,
        outcome=Outcome(result.outcome),
        errors=[Issue.model_validate(e) for e in _dicts(result.errors)],
        warnings=[Issue.model_validate(w) for w in _dicts(result.warnings)],
        evidence=dict(result.evidence or {}),
        duration_ms=result.duration_ms,
    )


def _dicts(items: list[Any] | None) -> list[dict[str, Any]]:
    return [item for item in items or [] if isinstance(item, dict)]
