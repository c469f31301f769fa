"""What the consumer and key routes do: whose account a path names, accounts, and API keys."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from api.auth import Principal, Role
from api.consumption_schemas import KeyCreated, KeyIn, KeyOut, KeyRotated
from core.errors import ConflictError, ConsumerBlockedError, NotFoundError, SpecValidationError
from core.keys import display_hint
from core.settings import Settings
from storage.models import ApiKey, Consumer
from storage.repositories import api_keys, consumers, services
from storage.repositories.api_keys import KeySpec
from storage.repositories.services import Actor

ME = "me"


def consumer_id_for(principal: Principal, consumer_id: str) -> str:
    """The account a path names: `me` (or their own id) for a consumer, any id for an admin.
    Another consumer's account does not exist for a consumer (404, as a missing one)."""
    if principal.role is Role.CONSUMER:
        if consumer_id not in (ME, principal.subject):
            raise NotFoundError(f"consumer {consumer_id} not found")
        return principal.subject
    if consumer_id == ME:
        raise NotFoundError("an admin has no consumer account of its own; name the consumer")
    return consumer_id


def account(session: Session, principal: Principal, consumer_id: str, actor: Actor) -> Consumer:
    """The named account; a consumer's own is created on its first use."""
    resolved = consumer_id_for(principal, consumer_id)
    if principal.role is Role.CONSUMER:
        consumers.require_valid_id(resolved, pointer="sub")
        return consumers.ensure(session, resolved, actor)
    return consumers.get(session, resolved)


def require_active(consumer: Consumer) -> None:
    """A blocked consumer may look and revoke, not add keys or access."""
    if consumer.status != consumers.ACTIVE:
        reason = f": {consumer.blocked_reason}" if consumer.blocked_reason else ""
        raise ConsumerBlockedError(f"consumer {consumer.id} is blocked{reason}")


def key_out(key: ApiKey, now: datetime) -> KeyOut:
    return KeyOut(
        id=key.id,
        consumer_id=key.consumer_id,
        name=key.name,
        hint=display_hint(key.id, key.last4),
        status=api_keys.status_of(key, now),
        service_ids=key.service_ids,
        requests_per_minute=key.requests_per_minute,
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        revoked_reason=key.revoked_reason,
        rotated_from_id=key.rotated_from_id,
        replaced_by_id=key.replaced_by_id,
        last_used_at=key.last_used_at,
    )


def create_key(
    session: Session, settings: Settings, principal: Principal, consumer_id: str, body: KeyIn, actor: Actor
) -> KeyCreated:
    """Issue a key; its secret is in this answer only."""
    now = datetime.now(UTC)
    consumer = account(session, principal, consumer_id, actor)
    require_active(consumer)
    _check_key_body(session, body, now)
    limit = settings.consumption.max_keys_per_consumer
    if api_keys.count_live(session, consumer.id, now) >= limit:
        raise ConflictError(f"consumer {consumer.id} already holds {limit} live keys; revoke one first")
    spec = KeySpec(body.name, body.expires_at, body.service_ids, body.requests_per_minute)
    key, issued = api_keys.create(session, consumer.id, spec, _pepper(settings), actor)
    return KeyCreated(key=key_out(key, now), secret=issued.token)


def _check_key_body(session: Session, body: KeyIn, now: datetime) -> None:
    problems = []
    if body.expires_at is not None and body.expires_at.tzinfo is None:
        problems.append({"pointer": "/expiresAt", "message": "must carry a time zone (e.g. Z)", "code": "timezone"})
    elif body.expires_at is not None and body.expires_at <= now:
        problems.append({"pointer": "/expiresAt", "message": "must be in the future", "code": "past"})
    for i, service_id in enumerate(body.service_ids or []):
        if not services.exists(session, service_id):
            problems.append({"pointer": f"/serviceIds/{i}", "message": f"no service {service_id}", "code": "unknown"})
    if problems:
        raise SpecValidationError("the key cannot be made as asked", problems)


def rotate_key(
    session: Session,
    settings: Settings,
    principal: Principal,
    consumer_id: str,
    key_id: str,
    grace_seconds: int,
    actor: Actor,
) -> KeyRotated:
    """A new key (shown once) replacing `key_id`, which works `grace_seconds` longer."""
    most = settings.consumption.key_rotation_max_grace_seconds
    if grace_seconds > most:
        detail = {"pointer": "/graceSeconds", "message": f"at most {most}", "code": "maximum"}
        raise SpecValidationError("the grace time is longer than allowed", [detail])
    consumer = account(session, principal, consumer_id, actor)
    require_active(consumer)
    now = datetime.now(UTC)
    old, new, issued = api_keys.rotate(session, consumer.id, key_id, grace_seconds, _pepper(settings), actor, now)
    return KeyRotated(key=key_out(new, now), secret=issued.token, previous=key_out(old, now))


def _pepper(settings: Settings) -> str:
    return settings.consumption.key_pepper.get_secret_value()
