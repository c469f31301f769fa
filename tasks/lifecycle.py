"""Tasks that load a service and move it along its lifecycle."""

from __future__ import annotations

from typing import Any

from prefect import task
from pydantic import Field

from core.domain import ServiceStatus
from storage.database import session_scope
from storage.repositories import audit, outbox, versions
from storage.repositories.services import SYSTEM
from tasks._common import PhaseInput, backoff, jitter


class TransitionInput(PhaseInput):
    """A lifecycle move the flow asks for."""

    target: ServiceStatus
    reason: str
    event_type: str | None = None
    failure_phase: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


@task(name="transition-status", retries=5, retry_delay_seconds=backoff(5), retry_jitter_factor=jitter())
def transition_status(inp: TransitionInput) -> str:
    """Change the version's (and a first publication's service's) status, audit and event, atomically."""
    with session_scope() as session:
        version = versions.transition(
            session,
            inp.version_id,
            inp.target,
            actor=SYSTEM,
            reason=inp.reason,
            event_type=inp.event_type,
            flow_run_id=inp.flow_run_id,
            failure_phase=inp.failure_phase,
            details=inp.details,
        )
        return version.status


class RollbackInput(PhaseInput):
    steps: list[str] = Field(description="Undo steps that ran, in registration order.")
    problems: list[str] = Field(default_factory=list, description="Undo steps that failed, with the error.")


@task(name="record-rollback", retries=5, retry_delay_seconds=backoff(5), retry_jitter_factor=jitter())
def record_rollback(inp: RollbackInput) -> None:
    """Audit the compensation run and queue `rollback_completed` (with any step that failed)."""
    with session_scope() as session:
        audit.append(
            session,
            service_id=inp.service_id,
            action="rollback_completed",
            actor=SYSTEM.id,
            actor_role=SYSTEM.role,
            reason="compensation finished" if not inp.problems else "compensation incomplete",
            flow_run_id=inp.flow_run_id,
            details={"steps": inp.steps, "problems": inp.problems},
        )
        outbox.add(
            session,
            aggregate_id=inp.service_id,
            event_type="rollback_completed",
            data={"serviceId": inp.service_id, "steps": inp.steps, "problems": inp.problems},
        )
