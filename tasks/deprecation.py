"""Deprecation and retirement: the service-level end of the lifecycle."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import task
from prefect.client.orchestration import get_client
from prefect.states import Scheduled
from pydantic import BaseModel

from core.domain import ServiceStatus
from core.run_names import RunKind, run_label
from storage.database import session_scope
from storage.repositories import services, versions
from storage.repositories.services import Actor
from tasks._common import backoff, jitter
from tasks.context import flow_context


class DeprecationInput(BaseModel):
    service_id: str
    actor_id: str
    actor_role: str | None = None
    reason: str
    grace_seconds: int
    flow_run_id: str | None = None


class RetirementInput(BaseModel):
    service_id: str
    flow_run_id: str


@task(name="mark-deprecated", retries=5, retry_delay_seconds=backoff(5), retry_jitter_factor=jitter())
def mark_deprecated(inp: DeprecationInput) -> str:
    """`active → deprecated` with its timestamp and sunset, in one transaction; `service_deprecated` tells consumers."""
    with session_scope() as session:
        service = services.transition(
            session,
            inp.service_id,
            ServiceStatus.DEPRECATED,
            actor=Actor(inp.actor_id, inp.actor_role),
            reason=inp.reason,
            event_type="service_deprecated",
            flow_run_id=inp.flow_run_id,
            details={"graceSeconds": inp.grace_seconds},
        )
        assert service.deprecated_at is not None
        sunset_at = service.deprecated_at + timedelta(seconds=inp.grace_seconds)
        # in the same transaction: no reader ever sees `deprecated` without its sunset
        services.schedule_retirement(session, inp.service_id, sunset_at, None)
        return sunset_at.isoformat()


@task(name="schedule-retirement", retries=5, retry_delay_seconds=backoff(5), retry_jitter_factor=jitter())
def schedule_retirement(inp: DeprecationInput, sunset_at: str) -> str:
    """Create the retirement flow run, scheduled for the sunset; a retried task gets the same run back."""
    when = datetime.fromisoformat(sunset_at)
    with session_scope() as session:
        service = services.get(session, inp.service_id)
        label = run_label(
            RunKind.RETIRE, provider_id=service.provider_id, service_name=service.name, service_id=service.id
        )
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(flow_context().settings.prefect.retire_deployment)
        run = client.create_flow_run_from_deployment(
            deployment.id,
            parameters={"service_id": inp.service_id},
            state=Scheduled(scheduled_time=when),
            idempotency_key=f"retire-{inp.service_id}-{sunset_at}",
            name=label.name,
            tags=label.tags,
        )
    with session_scope() as session:
        services.schedule_retirement(session, inp.service_id, when, str(run.id))
    return str(run.id)


@task(name="retire", retries=5, retry_delay_seconds=backoff(5), retry_jitter_factor=jitter())
def retire(inp: RetirementInput) -> str:
    """Re-check, then `deprecated → retired`, archive the record, keep the audit trail."""
    _wait_for_sunset(inp.service_id)
    with session_scope() as session:
        service = services.get(session, inp.service_id, for_update=True)
        retiring = (ServiceStatus.DEPRECATED.value, ServiceStatus.SUSPENDED.value)  # suspended keeps its sunset
        if service.status not in retiring or service.retirement_flow_run_id != inp.flow_run_id:
            return f"skipped: service is {service.status} and its retirement run is {service.retirement_flow_run_id}"
        if service.sunset_at and service.sunset_at > datetime.now(UTC) + timedelta(seconds=5):
            return f"skipped: sunset is {service.sunset_at.isoformat()}"
        record = _archive_record(session, service.id)
        services.transition(
            session,
            service.id,
            ServiceStatus.RETIRED,
            actor=Actor("retire-flow", "system"),
            reason="grace period over",
            event_type="service_retired",
            flow_run_id=inp.flow_run_id,
        )
        services.archive(session, service, record)
        return "retired"


# A worker may start a scheduled run a little early (the process worker prefetches runs due
# within PREFECT_WORKER_PREFETCH_SECONDS, 10 s by default, to hide its process start).
EARLY_START_SECONDS = 120


def _wait_for_sunset(service_id: str) -> None:
    """Started before the sunset (but close to it): wait for it rather than skip the retirement."""
    with session_scope() as session:
        sunset = services.get(session, service_id).sunset_at
    if sunset is not None:
        early = (sunset - datetime.now(UTC)).total_seconds()
        if 0 < early <= EARLY_START_SECONDS:
            time.sleep(early)


def _archive_record(session: Any, service_id: str) -> dict[str, Any]:
    service = services.get(session, service_id)
    return {
        "service": {
            c: _json(getattr(service, c))
            for c in ("id", "name", "version", "provider_id", "category", "published_at", "deprecated_at", "sunset_at")
        },
        "spec": service.spec,
        "versions": [
            {"id": v.id, "version": v.version, "status": v.status, "spec": v.spec, "publishedAt": _json(v.published_at)}
            for v in versions.for_service(session, service_id)
        ],
    }


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
