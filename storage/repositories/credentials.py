"""The provider's credential for its service and the service's signing secrets, encrypted at rest.

Neither is ever returned by the API after it is set (a signing secret is shown once, when it is
made), nor logged: the plaintext exists only in the request that sets it and in the gateway's memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import ConflictError, NotFoundError
from core.signing import new_signing_secret
from storage.consumption_feed import announce, service_name
from storage.encryption import SecretBox
from storage.models import ServiceCredential, SigningSecret
from storage.repositories import audit
from storage.repositories.services import Actor

BEARER, HEADER = "bearer", "header"


@dataclass(frozen=True)
class UpstreamCredential:
    """The header the gateway adds to calls to the provider. The value never shows in a repr."""

    header_name: str
    header_value: str = field(repr=False)


def credential_of(stored: ServiceCredential, box: SecretBox) -> UpstreamCredential:
    value = box.decrypt(stored.ciphertext)
    return UpstreamCredential(stored.header_name, f"Bearer {value}" if stored.scheme == BEARER else value)


def get_credential(session: Session, service_id: str) -> ServiceCredential | None:
    return session.get(ServiceCredential, service_id)


def set_credential(
    session: Session, service_id: str, scheme: str, header_name: str, value: str, box: SecretBox, actor: Actor
) -> ServiceCredential:
    """Store (or replace) the credential, encrypted; gateways drop the one they hold."""
    ciphertext, key_id = box.encrypt(value)
    stored = get_credential(session, service_id)
    action = "credential_replaced" if stored is not None else "credential_set"
    now = datetime.now(UTC)
    if stored is None:
        stored = ServiceCredential(service_id=service_id, created_at=now)
        session.add(stored)
    stored.scheme, stored.header_name, stored.ciphertext, stored.key_id = scheme, header_name, ciphertext, key_id
    stored.updated_at, stored.updated_by = now, actor.id
    session.flush()
    after = {"scheme": scheme, "headerName": header_name}  # never the value
    audit.append(session, service_id=service_id, action=action, **actor.audit_origin(), after=after)
    announce(session, service_name(service_id))
    return stored


def delete_credential(session: Session, service_id: str, actor: Actor) -> None:
    stored = get_credential(session, service_id)
    if stored is None:
        raise NotFoundError(f"service {service_id} has no credential")
    session.delete(stored)
    session.flush()
    audit.append(session, service_id=service_id, action="credential_removed", **actor.audit_origin())
    announce(session, service_name(service_id))


def load_credential(session: Session, service_id: str, box: SecretBox) -> UpstreamCredential | None:
    """The gateway's read of the credential alone (load_access returns it with the rest)."""
    stored = get_credential(session, service_id)
    return credential_of(stored, box) if stored is not None else None


# --- Signing secrets -----------------------------------------------------------------------------


def _live(session: Session, service_id: str, now: datetime) -> Sequence[SigningSecret]:
    query = select(SigningSecret).where(
        SigningSecret.service_id == service_id,
        or_(SigningSecret.expires_at.is_(None), SigningSecret.expires_at > now),
    )
    return session.scalars(query.order_by(SigningSecret.id.desc())).all()


def live_signing_secrets(session: Session, service_id: str, box: SecretBox, now: datetime) -> list[str]:
    """The secrets a call is signed with now, current first (one row per secret, few rows)."""
    return [box.decrypt(s.ciphertext) for s in _live(session, service_id, now)]


def signing_status(session: Session, service_id: str, now: datetime) -> Sequence[SigningSecret]:
    """The live secrets' records (never their values)."""
    return _live(session, service_id, now)


def ensure_signing_secret(session: Session, service_id: str, box: SecretBox, actor: Actor) -> SigningSecret:
    """The current secret, made now if the service has none (at most one current: a unique index)."""
    current = _current(session, service_id)
    if current is not None:
        return current
    plaintext = new_signing_secret()
    ciphertext, key_id = box.encrypt(plaintext)
    secret = SigningSecret(service_id=service_id, ciphertext=ciphertext, key_id=key_id, created_by=actor.id)
    try:
        with session.begin_nested():
            session.add(secret)
    except IntegrityError:  # made by a concurrent transaction
        found = _current(session, service_id)
        if found is None:
            raise
        return found
    audit.append(session, service_id=service_id, action="signing_secret_created", **actor.audit_origin())
    announce(session, service_name(service_id))
    return secret


def _current(session: Session, service_id: str) -> SigningSecret | None:
    query = select(SigningSecret).where(SigningSecret.service_id == service_id, SigningSecret.expires_at.is_(None))
    return session.scalars(query).one_or_none()


def reveal_signing_secret(session: Session, service_id: str, box: SecretBox, actor: Actor) -> tuple[SigningSecret, str]:
    """The current secret's value, once: a second fetch is refused (rotate to get a new one)."""
    secret = ensure_signing_secret(session, service_id, box, actor)
    locked = session.scalars(select(SigningSecret).where(SigningSecret.id == secret.id).with_for_update()).one()
    if locked.revealed_at is not None:
        raise ConflictError(
            f"the signing secret of {service_id} was already fetched on {locked.revealed_at.isoformat()}; "
            "rotate it to get a new one"
        )
    locked.revealed_at = datetime.now(UTC)
    session.flush()
    audit.append(session, service_id=service_id, action="signing_secret_revealed", **actor.audit_origin())
    return locked, box.decrypt(locked.ciphertext)


def rotate_signing_secret(
    session: Session, service_id: str, grace_seconds: int, box: SecretBox, actor: Actor, now: datetime
) -> tuple[SigningSecret, str]:
    """A new current secret, shown now; the old one is still signed with for `grace_seconds`."""
    old = _current(session, service_id)
    if old is not None:
        old.expires_at = now + timedelta(seconds=grace_seconds) if grace_seconds > 0 else now
        session.flush()
    plaintext = new_signing_secret()
    ciphertext, key_id = box.encrypt(plaintext)
    secret = SigningSecret(
        service_id=service_id, ciphertext=ciphertext, key_id=key_id, created_by=actor.id, revealed_at=now
    )
    session.add(secret)
    session.flush()
    details = {"previousValidUntil": old.expires_at.isoformat() if old is not None and old.expires_at else None}
    audit.append(
        session, service_id=service_id, action="signing_secret_rotated", **actor.audit_origin(), details=details
    )
    announce(session, service_name(service_id))
    return secret, plaintext
