"""Publishing and reading services."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api.body import read_json_object
from api.deps import DbSession, OrchestratorDep, SettingsDep
from api.errors import ErrorResponse
from api.orchestrator import Orchestrator
from api.schemas import PublishAccepted, ServiceOut, ServicePage, ServiceStatusOut
from api.status_report import build_status
from core.domain import ServiceStatus
from core.errors import SpecValidationError
from core.settings import Settings
from storage.database import session_scope
from storage.models import new_id
from storage.repositories import services
from storage.repositories.services import Actor, ServiceFilter
from tasks.spec_schema import schema_errors

router = APIRouter(prefix="/services", tags=["services"])

ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 404, 409, 413, 422, 503)}
SPEC_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "/api/v1/schemas/service-spec"}}},
    }
}


@router.post(
    "",
    status_code=202,
    response_model=PublishAccepted,
    responses=ERRORS,
    openapi_extra=SPEC_BODY,
    summary="Submit a service for publication",
)
async def publish(
    request: Request, response: Response, settings: SettingsDep, orch: OrchestratorDep
) -> PublishAccepted:
    """Validate the spec, store it as `submitted` and start the publish flow run; never waits for the pipeline."""
    spec = await read_json_object(request, settings.limits.max_body_bytes)
    accepted = await run_in_threadpool(_submit, spec, settings, orch)
    response.headers["Location"] = accepted.status_url
    return accepted


def _submit(spec: dict[str, Any], settings: Settings, orch: Orchestrator) -> PublishAccepted:
    issues = schema_errors(spec)
    if issues:
        details = [{"pointer": i.pointer, "message": i.message, "code": i.code} for i in issues]
        raise SpecValidationError(f"the service spec has {len(issues)} error(s)", details)
    service_id = new_id()
    # The run is created before the commit, so a Prefect outage leaves no half-created service;
    # the flow's first task retries until the row is visible.
    with session_scope() as session:
        services.create_submitted(session, spec, Actor(spec["provider"]["id"], "provider"), service_id)
        flow_run_id = orch.start_publish(service_id)
        services.set_flow_run(session, service_id, flow_run_id)
    status_url = f"{settings.api.public_url.rstrip('/')}/api/v1/services/{service_id}/status"
    return PublishAccepted(
        service_id=service_id, flow_run_id=flow_run_id, status=ServiceStatus.SUBMITTED.value, status_url=status_url
    )


@router.get("", response_model=ServicePage, responses=ERRORS, summary="List services")
def list_services(
    session: DbSession,
    status: Annotated[ServiceStatus | None, Query(description="Lifecycle status.")] = None,
    category: Annotated[str | None, Query(max_length=64)] = None,
    provider: Annotated[str | None, Query(max_length=128, description="Provider id.")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ServicePage:
    """A page of services, newest first, filtered by status, category and provider."""
    filters = ServiceFilter(status=status.value if status else None, category=category, provider_id=provider)
    items, total = services.list_services(session, filters, offset, limit)
    return ServicePage(items=[ServiceOut.model_validate(s) for s in items], total=total, offset=offset, limit=limit)


@router.get("/{service_id}", response_model=ServiceOut, responses=ERRORS, summary="Read a service")
def get_service(service_id: str, session: DbSession) -> ServiceOut:
    """One service with its spec and lifecycle fields."""
    return ServiceOut.model_validate(services.get(session, service_id))


@router.get("/{service_id}/status", response_model=ServiceStatusOut, responses=ERRORS, summary="Publishing status")
def get_status(service_id: str, session: DbSession, orch: OrchestratorDep) -> ServiceStatusOut:
    """Lifecycle status, current phase, per-phase results with timings, findings and the Prefect run."""
    return build_status(session, services.get(session, service_id), orch)
