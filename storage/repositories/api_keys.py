"""API keys: issue, list, revoke, rotate; and `load_key`, the gateway's read of one key.

Only the HMAC of a key's secret is stored (core/keys.py). Every change that can make a key stop
working is announced to the gateways (storage/consumption_feed.py) in its transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from core import keys
from core.errors import ConflictError, NotFoundError
from storage.consumption_feed import announce, key_name
from storage.models import ApiKey, Consumer
from storage.repositories import audit, outbox, paging
from storage.repositories.services import Actor


@dataclass(frozen=True)
class KeySpec:
    """What the consumer chooses for a new key."""

    name: str
    expires_at: datetime | None = None
    service_ids: list[str] | None = None
    requests_per_minute: int | None = None


def status_of(key: ApiKey, now: datetime) -> str:
    """active, rotating (replaced, working until its grace ends), expired or revoked."""
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "rotating" if key.replaced_by_id else "active"


def _live(now: datetime) -> Any:
    return and_(ApiKey.revoked_at.is_(None), or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now))


def count_live(session: Session, consumer_id: str, now: datetime) -> int:
    query = select(func.count()).select_from(ApiKey).where(ApiKey.consumer_id == consumer_id, _live(now))
    return session.scalar(query) or 0


def create(
    session: Session, consumer_id: str, spec: KeySpec, pepper: str, actor: Actor, *, rotated_from: str | None = None
) -> tuple[ApiKey, keys.IssuedKey]:
    """A new key; the returned IssuedKey's token is shown once and never stored."""
    issued = keys.new_key(pepper)
    key = ApiKey(
        id=issued.key_id,
        consumer_id=consumer_id,
        name=spec.name,
        secret_hash=issued.secret_hash,
        hash_scheme=keys.HASH_SCHEME,
        last4=issued.last4,
        service_ids=sorted(set(spec.service_ids)) if spec.service_ids is not None else None,
        requests_per_minute=spec.requests_per_minute,
        expires_at=spec.expires_at,
        created_by=actor.id,
        rotated_from_id=rotated_from,
    )
    session.add(key)
    session.flush()
    _audit(session, key, "api_key_created", actor, None, after=_public(key))
    return key, issued


def get(session: Session, consumer_id: str, key_id: str, *, for_update: bool = False) -> ApiKey:
    """The consumer's key (someone else's is 404, as a missing one)."""
    query = select(ApiKey).where(ApiKey.id == key_id, ApiKey.consumer_id == consumer_id)
    if for_update:
        query = query.with_for_update()
    key = session.scalars(query).one_or_none()
    if key is None:
        raise NotFoundError(f"API key {key_id} not found")
    return key


def list_for(
    session: Session, consumer_id: str, include_ended: bool, now: datetime, offset: int, limit: int
) -> tuple[Sequence[ApiKey], int]:
    """A page of the consumer's keys, newest first (revoked and expired ones only on request)."""
    query = select(ApiKey).where(ApiKey.consumer_id == consumer_id)
    if not include_ended:
        query = query.where(_live(now))
    return paging.page(session, query, (ApiKey.created_at.desc(), ApiKey.id), offset, limit)


def revoke(session: Session, consumer_id: str, key_id: str, reason: str | None, actor: Actor) -> ApiKey:
    """Refuse the key from now on, at every gateway; ConflictError when it already is revoked."""
    key = get(session, consumer_id, key_id, for_update=True)
    if key.revoked_at is not None:
        raise ConflictError(f"API key {key_id} is already revoked")
    before = _public(key)
    key.revoked_at, key.revoked_by, key.revoked_reason = datetime.now(UTC), actor.id, reason
    _audit(session, key, "api_key_revoked", actor, reason, before=before, after=_public(key))
    data = {"consumerId": consumer_id, "keyId": key_id, "revokedBy": actor.id, **({"reason": reason} if reason else {})}
    outbox.add(session, aggregate_id=consumer_id, event_type="api_key_revoked", data=data)
    announce(session, key_name(key_id))
    return key


def rotate(
    session: Session, consumer_id: str, key_id: str, grace_seconds: int, pepper: str, actor: Actor, now: datetime
) -> tuple[ApiKey, ApiKey, keys.IssuedKey]:
    """A new key with the old one's name, services and limit; the old one works `grace_seconds` more.

    Returns (old, new, issued). A key already replaced, revoked or expired cannot be rotated (409).
    """
    old = get(session, consumer_id, key_id, for_update=True)
    state = status_of(old, now)
    if state != "active":
        raise ConflictError(f"API key {key_id} is {state}; only an active key can be rotated")
    spec = KeySpec(old.name, old.expires_at, old.service_ids, old.requests_per_minute)
    new, issued = create(session, consumer_id, spec, pepper, actor, rotated_from=old.id)
    before = _public(old)
    grace_end = now + timedelta(seconds=grace_seconds)
    old.expires_at = grace_end if old.expires_at is None else min(old.expires_at, grace_end)
    old.replaced_by_id = new.id
    reason = f"rotated; works until {old.expires_at.isoformat()}"
    _audit(session, old, "api_key_rotated", actor, reason, before=before, after=_public(old))
    announce(session, key_name(old.id))
    return old, new, issued


def mark_used(session: Session, last_used: Mapping[str, datetime]) -> None:
    """Record when keys were last used (the gateway calls this in batches, off its hot path)."""
    for key_id, when in sorted(last_used.items()):
        session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < when))
            .values(last_used_at=when)
            .execution_options(synchronize_session=False)
        )


@dataclass(frozen=True)
class KeyRecord:
    """What a gateway keeps in memory for one key (see load_key)."""

    key_id: str
    consumer_id: str
    secret_hash: str
    hash_scheme: str
    service_ids: frozenset[str] | None
    requests_per_minute: int | None
    expires_at: datetime | None
    revoked_at: datetime | None
    consumer_status: str
    consumer_blocked_reason: str | None

    def refusal(self, now: datetime) -> str | None:
        """Why the key may not be used now, or None when it may."""
        if self.revoked_at is not None:
            return "the API key has been revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "the API key has expired"
        if self.consumer_status != "active":
            reason = f": {self.consumer_blocked_reason}" if self.consumer_blocked_reason else ""
            return f"the consumer is blocked{reason}"
        return None

    def may_call(self, service_id: str) -> bool:
        """Whether the key is limited to services that exclude this one."""
        return self.service_ids is None or service_id in self.service_ids

    def matches(self, pepper: str, secret: str) -> bool:
        """Constant-time check of a presented secret."""
        return keys.secret_matches(pepper, self.key_id, secret, self.secret_hash)


def load_key(session: Session, key_id: str) -> KeyRecord | None:
    """The gateway's read: the key with its consumer's status, by primary key, in one query."""
    query = (
        select(ApiKey, Consumer.status, Consumer.blocked_reason)
        .join(Consumer, Consumer.id == ApiKey.consumer_id)
        .where(ApiKey.id == key_id)
    )
    row = session.execute(query).one_or_none()
    if row is None:
        return None
    key, consumer_status, blocked_reason = row
    return KeyRecord(
        key_id=key.id,
        consumer_id=key.consumer_id,
        secret_hash=key.secret_hash,
        hash_scheme=key.hash_scheme,
        service_ids=frozenset(key.service_ids) if key.service_ids is not None else None,
        requests_per_minute=key.requests_per_minute,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        consumer_status=consumer_status,
        consumer_blocked_reason=blocked_reason,
    )


def _public(key: ApiKey) -> dict[str, Any]:
    """The key's audit view (never the hash)."""
    return {
        "name": key.name,
        "expiresAt": key.expires_at.isoformat() if key.expires_at else None,
        "serviceIds": key.service_ids,
        "requestsPerMinute": key.requests_per_minute,
        "revoked": key.revoked_at is not None,
        "replacedBy": key.replaced_by_id,
    }


def _audit(
    session: Session,
    key: ApiKey,
    action: str,
    actor: Actor,
    reason: str | None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    audit.append(
        session,
        service_id=None,
        consumer_id=key.consumer_id,
        action=action,
        **actor.audit_origin(),
        reason=reason,
        details={"keyId": key.id},
        before=before,
        after=after,
    )
