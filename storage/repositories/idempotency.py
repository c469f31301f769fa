"""Idempotency keys: the first request with a key claims it, its response is kept for replays."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import IdempotencyKey


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    headers: dict[str, str]
    body: str


@dataclass(frozen=True)
class Claim:
    """What to do with a request carrying a key: `run` it, `replay` a stored response, or refuse."""

    outcome: str  # run | replay | in_flight | mismatch
    stored: StoredResponse | None = None


def claim(
    session: Session, principal: str, key: str, fingerprint: str, ttl: timedelta, in_flight_for: timedelta
) -> Claim:
    """Claim `key` for this request, or report why it is taken. Commits nothing itself."""
    now = datetime.now(UTC)
    session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.principal == principal, IdempotencyKey.key == key, IdempotencyKey.expires_at < now
        )
    )
    row = IdempotencyKey(principal=principal, key=key, fingerprint=fingerprint, created_at=now, expires_at=now + ttl)
    try:
        with session.begin_nested():
            session.add(row)
        return Claim("run")
    except IntegrityError:
        pass  # another request holds (or held) the key
    existing = session.scalars(
        select(IdempotencyKey).where(IdempotencyKey.principal == principal, IdempotencyKey.key == key).with_for_update()
    ).one()
    if existing.fingerprint != fingerprint:
        return Claim("mismatch")
    if existing.status_code is not None:
        stored = StoredResponse(
            existing.status_code, dict(existing.response_headers or {}), existing.response_body or ""
        )
        return Claim("replay", stored)
    if existing.created_at < now - in_flight_for:  # its request died without finishing: take the key over
        existing.created_at = now
        existing.expires_at = now + ttl
        return Claim("run")
    return Claim("in_flight")


def complete(session: Session, principal: str, key: str, response: StoredResponse) -> None:
    """Keep the response the claimed request got."""
    row = _row(session, principal, key)
    if row is not None:
        row.status_code = response.status_code
        row.response_headers = response.headers
        row.response_body = response.body


def release(session: Session, principal: str, key: str) -> None:
    """Forget a claim whose request failed on our side (5xx), so a retry runs it again."""
    session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.principal == principal,
            IdempotencyKey.key == key,
            IdempotencyKey.status_code.is_(None),
        )
    )


def purge_expired(session: Session, batch: int = 500) -> int:
    """Drop up to `batch` expired keys; returns how many."""
    now = datetime.now(UTC)
    ids = session.scalars(select(IdempotencyKey.id).where(IdempotencyKey.expires_at < now).limit(batch)).all()
    if ids:
        session.execute(delete(IdempotencyKey).where(IdempotencyKey.id.in_(ids)))
    return len(ids)


def _row(session: Session, principal: str, key: str) -> Any:
    return session.scalars(
        select(IdempotencyKey).where(IdempotencyKey.principal == principal, IdempotencyKey.key == key)
    ).one_or_none()
