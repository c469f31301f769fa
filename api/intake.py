"""Durable intake: the flow runs an accepted request owes, written in the request's own transaction.

The API answers as soon as the change and its run request are committed; api/run_starter.py then
creates the run in Prefect with retries. Each run is named and tagged for the Prefect UI when it is
created (core/run_names.py), so an operator sees what runs (`publish acme/chat-pro 1.2.0`) and can
filter by provider and service without an extra call per run.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from sqlalchemy.orm import Session

from core import telemetry
from core.logging import current_request_id
from core.run_names import RunKind, RunLabel, publish_run_label, run_label
from core.settings import PrefectSettings
from storage.models import Service
from storage.repositories import access_requests, run_requests
from storage.repositories.run_requests import RunSpec


def publish_run(settings: PrefectSettings, service_id: str, version_id: str, spec: dict[str, Any]) -> RunSpec:
    """The publish run of a version; one run per version, whatever retries its start takes."""
    label = publish_run_label(spec, service_id)
    return RunSpec(
        kind=RunKind.PUBLISH.value,
        deployment=settings.publish_deployment,
        parameters={"service_id": service_id, "version_id": version_id},
        idempotency_key=f"publish-{version_id}",
        service_id=service_id,
        version_id=version_id,
        run_name=label.name,
        tags=label.tags,
        **_origin(),
    )


def deprecation_run(
    settings: PrefectSettings, service: Service, actor_id: str, actor_role: str | None, reason: str, grace: int
) -> RunSpec:
    """The run that marks the service deprecated and schedules its retirement."""
    parameters = {
        "service_id": service.id,
        "actor_id": actor_id,
        "actor_role": actor_role,
        "reason": reason,
        "grace_seconds": grace,
    }
    label = _label(RunKind.DEPRECATE, service)
    return RunSpec(
        kind=RunKind.DEPRECATE.value,
        deployment=settings.deprecate_deployment,
        parameters=parameters,
        idempotency_key=f"deprecate-{service.id}-{uuid4()}",
        service_id=service.id,
        run_name=label.name,
        tags=label.tags,
        **_origin(),
    )


def registry_sync_run(settings: PrefectSettings, service: Service) -> RunSpec:
    """The run that pushes a live service's changed metadata to the external registry."""
    label = _label(RunKind.SYNC_REGISTRY, service)
    return RunSpec(
        kind=RunKind.SYNC_REGISTRY.value,
        deployment=settings.sync_deployment,
        parameters={"service_id": service.id},
        idempotency_key=f"sync-{service.id}-{uuid4()}",
        service_id=service.id,
        run_name=label.name,
        tags=label.tags,
        **_origin(),
    )


def access_approval_run(settings: PrefectSettings, service: Service, consumer_id: str, request_id: str) -> RunSpec:
    """The run that waits for the decision on a consumer's access (`approve-access acme/chat for alice`)."""
    label = _label(RunKind.APPROVE_ACCESS, service)
    return RunSpec(
        kind=RunKind.APPROVE_ACCESS.value,
        deployment=settings.approve_access_deployment,
        parameters={"access_request_id": request_id},
        idempotency_key=access_requests.run_key(request_id),
        service_id=service.id,
        run_name=f"{label.name} for {consumer_id}",
        tags=(*label.tags, f"consumer:{consumer_id}"),
        **_origin(),
    )


def _origin() -> dict[str, str | None]:
    """The request that owes the run: its X-Request-ID (tagged on the run) and, with tracing on, its
    traceparent (the run's trace continues it)."""
    return {"request_id": current_request_id(), "traceparent": telemetry.current_traceparent()}


def _label(kind: RunKind, service: Service) -> RunLabel:
    return run_label(kind, provider_id=service.provider_id, service_name=service.name, service_id=service.id)


def owe(session: Session, run: RunSpec) -> None:
    """Record the run in the caller's transaction; the starter takes it once that commits."""
    run_requests.enqueue(session, run)
