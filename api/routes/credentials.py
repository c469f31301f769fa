"""The provider's credential for its service, and the secret the marketplace signs its calls with."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from api import access, provider_secrets
from api.auth import AnyRole, Principal, Role, require_roles
from api.consumption_schemas import (
    CredentialIn,
    CredentialOut,
    SigningRotationIn,
    SigningSecretInfo,
    SigningSecretOut,
    SigningSecretStatus,
)
from api.deps import DbSession, SettingsDep
from api.errors import ErrorResponse
from storage.repositories import credentials, services

router = APIRouter(prefix="/services/{service_id}", tags=["credentials"])
ProviderOrAdmin = Annotated[Principal, Depends(require_roles(Role.PROVIDER, Role.ADMIN))]
Provider = Annotated[Principal, Depends(require_roles(Role.PROVIDER))]
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 403, 404, 409, 422)}
NO_STORE = {"Cache-Control": "no-store"}


@router.get("/credential", response_model=CredentialOut, responses=ERRORS, summary="Whether a credential is set")
def read_credential(service_id: str, session: DbSession, principal: AnyRole) -> CredentialOut:
    """Whether the marketplace holds a credential for the service, how it is sent and since when; never its value."""
    return provider_secrets.read_credential(session, principal, service_id)


@router.put("/credential", response_model=CredentialOut, responses=ERRORS, summary="Set the upstream credential")
def set_credential(
    service_id: str, body: CredentialIn, request: Request, settings: SettingsDep, principal: ProviderOrAdmin
) -> CredentialOut:
    """Give the marketplace the credential it calls the service with; stored encrypted, never returned."""
    actor = access.actor_for(principal, request)
    return provider_secrets.set_credential(settings, principal, service_id, body, actor)


@router.delete(
    "/credential", status_code=204, response_class=Response, responses=ERRORS, summary="Remove the credential"
)
def remove_credential(service_id: str, request: Request, principal: ProviderOrAdmin) -> Response:
    """Forget the credential: gateways stop sending it within a second."""
    provider_secrets.remove_credential(principal, service_id, access.actor_for(principal, request))
    return Response(status_code=204)


@router.get("/signing-secret", response_model=SigningSecretStatus, responses=ERRORS, summary="Signing secrets")
def signing_status(service_id: str, session: DbSession, principal: AnyRole) -> SigningSecretStatus:
    """The live signing secrets' records (when made, fetched, until when signed with); never their values."""
    service = services.get(session, service_id)
    access.require_internals(principal, service_id, service.provider_id, service.status)
    rows = credentials.signing_status(session, service_id, datetime.now(UTC))
    return SigningSecretStatus(service_id=service_id, items=[SigningSecretInfo.model_validate(r) for r in rows])


@router.post(
    "/signing-secret", status_code=201, response_model=SigningSecretOut, responses=ERRORS, summary="Fetch the secret"
)
def reveal_signing_secret(
    service_id: str, request: Request, response: Response, settings: SettingsDep, principal: Provider
) -> SigningSecretOut:
    """The secret that signs calls to the service, shown once (owner only); `409` after that: rotate instead."""
    response.headers.update(NO_STORE)
    return provider_secrets.reveal_signing_secret(settings, principal, service_id, access.actor_for(principal, request))


@router.post(
    "/signing-secret/rotation",
    status_code=201,
    response_model=SigningSecretOut,
    responses=ERRORS,
    summary="Rotate the secret",
)
def rotate_signing_secret(
    service_id: str,
    body: SigningRotationIn,
    request: Request,
    response: Response,
    settings: SettingsDep,
    principal: Provider,
) -> SigningSecretOut:
    """A new secret, shown once; calls are signed with the old one too for `graceSeconds` (owner only)."""
    response.headers.update(NO_STORE)
    actor = access.actor_for(principal, request)
    return provider_secrets.rotate_signing_secret(settings, principal, service_id, body.grace_seconds, actor)
