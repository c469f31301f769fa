"""What the credential and signing-secret routes do. Values go in (credential) or come out once
(signing secret); nothing here ever puts one in a log line or an error message."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from api.access import require_change, require_internals
from api.auth import Principal
from api.consumption_schemas import CredentialIn, CredentialOut, SigningSecretOut
from core.errors import ForbiddenError, SpecValidationError
from core.settings import Settings
from storage.database import session_scope
from storage.encryption import box_for
from storage.models import ServiceCredential
from storage.repositories import credentials, services
from storage.repositories.services import Actor

# Headers the gateway sets itself, or that would break the call: a credential may not take them.
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection", "te", "upgrade", "cookie"}
)


def credential_view(service_id: str, stored: ServiceCredential | None) -> CredentialOut:
    if stored is None:
        return CredentialOut(service_id=service_id, set=False)
    return CredentialOut(
        service_id=service_id,
        set=True,
        scheme=stored.scheme,
        header_name=stored.header_name,
        key_id=stored.key_id,
        created_at=stored.created_at,
        updated_at=stored.updated_at,
        updated_by=stored.updated_by,
    )


def read_credential(session: Session, principal: Principal | None, service_id: str) -> CredentialOut:
    """That a credential is set, how it is sent and when; never its value."""
    service = services.get(session, service_id)
    require_internals(principal, service_id, service.provider_id, service.status)
    return credential_view(service_id, credentials.get_credential(session, service_id))


def set_credential(
    settings: Settings, principal: Principal, service_id: str, body: CredentialIn, actor: Actor
) -> CredentialOut:
    """Store the provider's credential for the service, encrypted (owner or admin)."""
    header_name = _header_name(body)
    with session_scope() as session:
        service = services.get(session, service_id, for_update=True)
        require_change(principal, service_id, service.provider_id, service.status)
        stored = credentials.set_credential(
            session, service_id, body.scheme, header_name, body.value, box_for(settings.consumption), actor
        )
        return credential_view(service_id, stored)


def _header_name(body: CredentialIn) -> str:
    if body.scheme == "bearer":
        if body.header_name not in (None, "Authorization"):
            detail = {"pointer": "/headerName", "message": "bearer credentials go in Authorization", "code": "bearer"}
            raise SpecValidationError("the credential cannot be used as given", [detail])
        return "Authorization"
    name = body.header_name
    problem = None
    if name is None:
        problem = "a header credential names its header"
    elif name.lower() in RESERVED_HEADERS or name.lower().startswith("x-marketplace-"):
        problem = f"{name} is set by the marketplace itself"
    if problem is not None:
        raise SpecValidationError(
            "the credential cannot be used as given", [{"pointer": "/headerName", "message": problem}]
        )
    assert name is not None
    return name


def remove_credential(principal: Principal, service_id: str, actor: Actor) -> None:
    with session_scope() as session:
        service = services.get(session, service_id, for_update=True)
        require_change(principal, service_id, service.provider_id, service.status)
        credentials.delete_credential(session, service_id, actor)


def _require_owner(principal: Principal, service_id: str, provider_id: str, status: str) -> None:
    """Signing secrets are the provider's alone: not even an admin fetches one."""
    require_change(principal, service_id, provider_id, status)
    if not principal.owns(provider_id):
        raise ForbiddenError(f"only provider {provider_id!r} fetches or rotates the signing secret of {service_id}")


def reveal_signing_secret(settings: Settings, principal: Principal, service_id: str, actor: Actor) -> SigningSecretOut:
    """The current signing secret, shown once."""
    with session_scope() as session:
        service = services.get(session, service_id)
        _require_owner(principal, service_id, service.provider_id, service.status)
        secret, value = credentials.reveal_signing_secret(session, service_id, box_for(settings.consumption), actor)
        return SigningSecretOut(service_id=service_id, secret=value, created_at=secret.created_at)


def rotate_signing_secret(
    settings: Settings, principal: Principal, service_id: str, grace_seconds: int, actor: Actor
) -> SigningSecretOut:
    """A new signing secret, shown now; calls carry the old one's signature too for `grace_seconds`."""
    most = settings.consumption.signing_rotation_max_grace_seconds
    if grace_seconds > most:
        detail = {"pointer": "/graceSeconds", "message": f"at most {most}", "code": "maximum"}
        raise SpecValidationError("the grace time is longer than allowed", [detail])
    now = datetime.now(UTC)
    with session_scope() as session:
        service = services.get(session, service_id)
        _require_owner(principal, service_id, service.provider_id, service.status)
        previous = [s for s in credentials.signing_status(session, service_id, now) if s.expires_at is None]
        secret, value = credentials.rotate_signing_secret(
            session, service_id, grace_seconds, box_for(settings.consumption), actor, now
        )
        until = previous[0].expires_at if previous else None
        return SigningSecretOut(
            service_id=service_id, secret=value, created_at=secret.created_at, previous_valid_until=until
        )
