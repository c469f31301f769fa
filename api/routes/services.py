"""Publishing, reading, updating and deprecating services."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api import access, publishing
from api.auth import Admin, MaybePrincipal, ProviderOrAdmin
from api.body import read_json_object
from api.deps import CacheDep, DbSession, Limit, Offset, OrchestratorDep, SettingsDep, StatusViewDep
from api.errors import ErrorResponse
from api.rate_limit import PublishQuota
from api.routes.service_health import observed_sla
from api.schemas import (
    DeprecationAccepted,
    PublishAccepted,
    ServiceOut,
    ServicePage,
    ServiceStatusOut,
    SuspensionIn,
    VersionAccepted,
)
from api.status.record import StatusRecord
from api.status.view import StatusView
from checks.spec_schema import load_schema
from core.domain import ServiceStatus
from core.settings import Settings
from storage.database import session_scope
from storage.repositories import services
from storage.repositories.services import ServiceFilter

router = APIRouter(prefix="/services", tags=["services"])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 415, 422, 429, 503)
}
# The spec schema itself (also served at /api/v1/schemas/service-spec), so clients and API fuzzers
# generating bodies from this document need not fetch anything else.
SPEC_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {k: v for k, v in load_schema().items() if k not in ("$schema", "$id")}}
        },
    }
}


def status_url(settings: SettingsDep, service_id: str) -> str:
    return f"{settings.api.public_url.rstrip('/')}/api/v1/services/{service_id}/status"


def set_lifecycle_headers(
    response: Response, status: str, deprecated_at: datetime | None, sunset_at: datetime | None
) -> None:
    """RFC 9745 `Deprecation` and RFC 8594 `Sunset` on a deprecated service's responses."""
    if status == ServiceStatus.DEPRECATED.value and deprecated_at:
        response.headers["Deprecation"] = f"@{int(deprecated_at.timestamp())}"
        if sunset_at:
            response.headers["Sunset"] = format_datetime(sunset_at.astimezone(UTC), usegmt=True)


@router.post(
    "",
    status_code=202,
    response_model=PublishAccepted,
    responses=ERRORS,
    openapi_extra=SPEC_BODY,
    summary="Submit a service for publication",
)
async def publish(
    request: Request,
    response: Response,
    settings: SettingsDep,
    principal: ProviderOrAdmin,
    _quota: PublishQuota,
) -> PublishAccepted:
    """Validate the spec and store it as `submitted` with its publish run owed; never waits for Prefect or the pipeline.

    A provider publishes under its own provider id (the token's subject); admin for any provider.
    """
    spec = await read_json_object(request, settings.limits.max_body_bytes)
    access.require_publish_as(principal, spec)
    actor = access.actor_for(principal, request)
    service_id, _ = await run_in_threadpool(publishing.submit_service, spec, actor, settings)
    url = status_url(settings, service_id)
    response.headers["Location"] = url
    return PublishAccepted(service_id=service_id, flow_run_id=None, status="submitted", status_url=url)


@router.get("", response_model=ServicePage, responses=ERRORS, summary="List services")
def list_services(
    session: DbSession,
    principal: MaybePrincipal,
    status: Annotated[ServiceStatus | None, Query(description="Lifecycle status.")] = None,
    category: Annotated[str | None, Query(max_length=64)] = None,
    provider: Annotated[str | None, Query(max_length=128, description="Provider id.")] = None,
    offset: Offset = 0,
    limit: Limit = 20,
) -> ServicePage:
    """A page of services, newest first, filtered by status, category and provider.

    Providers list their own services, governance and admin all of them, anyone else the live catalogue.
    """
    requested = ServiceFilter(status=status.value if status else None, category=category, provider_id=provider)
    filters = access.listing_filter(principal, requested)
    items, total = services.list_services(session, filters, offset, limit)
    return ServicePage(items=[ServiceOut.model_validate(s) for s in items], total=total, offset=offset, limit=limit)


@router.get("/{service_id}", response_model=ServiceOut, responses=ERRORS, summary="Read a service")
def get_service(service_id: str, principal: MaybePrincipal, cache: CacheDep, settings: SettingsDep) -> Response:
    """One service with its spec and lifecycle fields (cached; every change invalidates it).

    Live services are public; others only for their provider, governance and admin.
    """
    token = cache.service_token(service_id)  # before loading: see storage/cache.py
    body = cache.get_service(service_id, token)
    if body is None:
        body = _read(service_id, settings).model_dump(mode="json", by_alias=True)
        cache.put_service(service_id, token, body)
    access.require_readable(principal, service_id, body["providerId"], body["status"])
    response = Response(content=json.dumps(body), media_type="application/json")
    set_lifecycle_headers(response, body["status"], _parse(body["deprecatedAt"]), _parse(body["sunsetAt"]))
    return response


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@router.get("/{service_id}/status", response_model=ServiceStatusOut, responses=ERRORS, summary="Publishing status")
async def get_status(service_id: str, principal: MaybePrincipal, view: StatusViewDep) -> Response:
    """Lifecycle status, current phase, per-phase results with timings, findings and the Prefect run.

    Our records are cached (every change invalidates them); the Prefect run state is at most about a second old.
    """
    record = await view.current(service_id)
    access.require_internals(principal, service_id, record.provider_id, record.status)
    return _status_response(record, view)


def _status_response(record: StatusRecord, view: StatusView) -> Response:
    body = view.render(record)
    # orjson: the report with its phase evidence is the largest body polled; the json module took
    # a tenth of the API's CPU under load. Same bytes as JSONResponse (UTF-8, compact).
    response = Response(content=orjson.dumps(body), media_type="application/json")
    set_lifecycle_headers(response, record.status, record.deprecated_at, record.sunset_at)
    return response


@router.put(
    "/{service_id}",
    responses={**ERRORS, 202: {"model": VersionAccepted}},
    response_model=ServiceOut,
    summary="Update metadata (a version change starts the version flow)",
)
async def update_service(
    service_id: str,
    request: Request,
    response: Response,
    settings: SettingsDep,
    principal: ProviderOrAdmin,
    _quota: PublishQuota,
) -> Any:
    """Change metadata in place (validated, policy-checked, audited, registry synced); a new `version` is published."""
    await run_in_threadpool(_require_change, principal, service_id)
    changes = await read_json_object(request, settings.limits.max_body_bytes)
    actor = access.actor_for(principal, request)
    version = await run_in_threadpool(publishing.update_metadata, service_id, changes, actor, settings)
    if version is not None:
        response.status_code = 202
        return _version_accepted(settings, version.service_id, version.id, version.version)
    return await run_in_threadpool(_read, service_id, settings)


def _read(service_id: str, settings: Settings) -> ServiceOut:
    with session_scope() as session:
        out = ServiceOut.model_validate(services.get(session, service_id))
        # each health check invalidates the cached body (storage/repositories/health.py), so the figure stays fresh
        out.observed_sla = observed_sla(session, service_id, settings.health)
        return out


def _require_change(principal: ProviderOrAdmin, service_id: str) -> None:
    with session_scope() as session:
        service = services.get(session, service_id)
        access.require_change(principal, service_id, service.provider_id, service.status)


@router.delete(
    "/{service_id}",
    status_code=202,
    response_model=DeprecationAccepted,
    responses=ERRORS,
    summary="Deprecate (retirement follows after the grace period)",
)
def deprecate_service(
    service_id: str,
    request: Request,
    settings: SettingsDep,
    principal: ProviderOrAdmin,
    _quota: PublishQuota,
) -> DeprecationAccepted:
    """Owe the deprecation flow: `deprecated`, consumers notified, retirement scheduled at now + grace period."""
    _require_change(principal, service_id)
    grace = publishing.deprecate(service_id, access.actor_for(principal, request), settings)
    return DeprecationAccepted(service_id=service_id, flow_run_id=None, status="deprecating", grace_seconds=grace)


@router.delete(
    "/{service_id}/deprecation",
    response_model=ServiceOut,
    responses=ERRORS,
    summary="Withdraw a deprecation before the sunset",
)
def reinstate_service(
    service_id: str, request: Request, orch: OrchestratorDep, principal: ProviderOrAdmin, settings: SettingsDep
) -> ServiceOut:
    """Back to `active`; the scheduled retirement run is cancelled."""
    _require_change(principal, service_id)
    publishing.reinstate(service_id, access.actor_for(principal, request), orch)
    return _read(service_id, settings)


@router.post(
    "/{service_id}/suspension",
    response_model=ServiceOut,
    responses=ERRORS,
    summary="Suspend a live service (admin)",
)
def suspend_service(
    service_id: str, body: SuspensionIn, request: Request, settings: SettingsDep, principal: Admin
) -> ServiceOut:
    """Take the service out of the marketplace now: out of search and the gateway, evented, audited."""
    publishing.suspend(service_id, body.reason, access.actor_for(principal, request), settings)
    return _read(service_id, settings)


@router.delete(
    "/{service_id}/suspension",
    response_model=ServiceOut,
    responses=ERRORS,
    summary="Lift a suspension (admin)",
)
def lift_suspension(service_id: str, request: Request, settings: SettingsDep, principal: Admin) -> ServiceOut:
    """Back to what it was before (active, or deprecated with its sunset unchanged)."""
    publishing.lift_suspension(service_id, access.actor_for(principal, request), settings)
    return _read(service_id, settings)


def _version_accepted(settings: SettingsDep, service_id: str, version_id: str, version: str) -> VersionAccepted:
    return VersionAccepted(
        service_id=service_id,
        version_id=version_id,
        version=version,
        flow_run_id=None,
        status="submitted",
        status_url=status_url(settings, service_id),
    )


@router.post(
    "/{service_id}/versions",
    status_code=202,
    response_model=VersionAccepted,
    responses=ERRORS,
    openapi_extra=SPEC_BODY,
    summary="Publish a new version",
)
async def publish_version(
    service_id: str,
    request: Request,
    response: Response,
    settings: SettingsDep,
    principal: ProviderOrAdmin,
    _quota: PublishQuota,
) -> VersionAccepted:
    """A greater semver through the same pipeline; the current version keeps serving until the new one is active."""
    await run_in_threadpool(_require_change, principal, service_id)
    spec = await read_json_object(request, settings.limits.max_body_bytes)
    access.require_publish_as(principal, spec)
    actor = access.actor_for(principal, request)
    version = await run_in_threadpool(publishing.submit_version, service_id, spec, actor, settings)
    accepted = _version_accepted(settings, service_id, version.id, version.version)
    response.headers["Location"] = accepted.status_url
    return accepted
