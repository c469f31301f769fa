"""Consumer accounts: created on first use or by an admin, blocked and unblocked with a reason."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import ConflictError, NotFoundError, SpecValidationError
from storage.consumption_feed import announce, consumer_name
from storage.models import Consumer
from storage.repositories import audit, outbox, paging
from storage.repositories.services import Actor

ACTIVE, BLOCKED = "active", "blocked"
# What a consumer id may hold: it goes into an HTTP header to providers (X-Marketplace-Consumer).
CONSUMER_ID = re.compile(r"^[A-Za-z0-9._:@|+-]{1,128}$")


def require_valid_id(consumer_id: str, pointer: str = "/id") -> None:
    """422 for an id that could not travel in a header (the token's `sub`, or an admin's choice)."""
    if not CONSUMER_ID.match(consumer_id):
        raise SpecValidationError(
            "a consumer id is 1-128 letters, digits or . _ : @ | + -",
            [{"pointer": pointer, "message": "must match ^[A-Za-z0-9._:@|+-]{1,128}$", "code": "pattern"}],
        )


def find(session: Session, consumer_id: str, *, for_update: bool = False) -> Consumer | None:
    query = select(Consumer).where(Consumer.id == consumer_id)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def get(session: Session, consumer_id: str, *, for_update: bool = False) -> Consumer:
    consumer = find(session, consumer_id, for_update=for_update)
    if consumer is None:
        raise NotFoundError(f"consumer {consumer_id} not found")
    return consumer


def create(session: Session, consumer_id: str, name: str, email: str | None, actor: Actor) -> Consumer:
    """A new active consumer; ConflictError when the id is taken."""
    require_valid_id(consumer_id)
    consumer = Consumer(id=consumer_id, name=name, email=email, status=ACTIVE, created_by=actor.id)
    try:
        with session.begin_nested():
            session.add(consumer)
    except IntegrityError as exc:
        raise ConflictError(f"consumer {consumer_id} already exists") from exc
    _audit(session, consumer, "consumer_created", actor, None, after={"status": ACTIVE, "name": name})
    return consumer


def ensure(session: Session, consumer_id: str, actor: Actor) -> Consumer:
    """The consumer a token's subject names, created on its first use (two first requests at once make one)."""
    existing = find(session, consumer_id)
    if existing is not None:
        return existing
    try:
        return create(session, consumer_id, consumer_id, None, actor)
    except ConflictError:
        return get(session, consumer_id)


def list_consumers(session: Session, status: str | None, offset: int, limit: int) -> tuple[Sequence[Consumer], int]:
    """A page of consumers, newest first, and how many match."""
    query = select(Consumer)
    if status:
        query = query.where(Consumer.status == status)
    return paging.page(session, query, (Consumer.created_at.desc(), Consumer.id), offset, limit)


def block(session: Session, consumer_id: str, reason: str, actor: Actor) -> Consumer:
    """Block: every key of the consumer stops working at every gateway (announced)."""
    consumer = get(session, consumer_id, for_update=True)
    if consumer.status == BLOCKED:
        raise ConflictError(f"consumer {consumer_id} is already blocked")
    consumer.status, consumer.blocked_at = BLOCKED, datetime.now(UTC)
    consumer.blocked_by, consumer.blocked_reason = actor.id, reason
    _audit(session, consumer, "consumer_blocked", actor, reason, before={"status": ACTIVE}, after={"status": BLOCKED})
    _event(session, consumer, "consumer_blocked", reason)
    announce(session, consumer_name(consumer_id))
    return consumer


def unblock(session: Session, consumer_id: str, reason: str | None, actor: Actor) -> Consumer:
    """Lift a block; the consumer's live keys work again."""
    consumer = get(session, consumer_id, for_update=True)
    if consumer.status != BLOCKED:
        raise ConflictError(f"consumer {consumer_id} is not blocked")
    consumer.status, consumer.blocked_at, consumer.blocked_by, consumer.blocked_reason = ACTIVE, None, None, None
    _audit(session, consumer, "consumer_unblocked", actor, reason, before={"status": BLOCKED}, after={"status": ACTIVE})
    _event(session, consumer, "consumer_unblocked", reason)
    announce(session, consumer_name(consumer_id))
    return consumer


def _audit(
    session: Session,
    consumer: Consumer,
    action: str,
    actor: Actor,
    reason: str | None,
    before: dict[str, str] | None = None,
    after: dict[str, str] | None = None,
) -> None:
    session.flush()
    audit.append(
        session,
        service_id=None,
        consumer_id=consumer.id,
        action=action,
        **actor.audit_origin(),
        reason=reason,
        before=before,
        after=after,
    )


def _event(session: Session, consumer: Consumer, event_type: str, reason: str | None) -> None:
    data = {"consumerId": consumer.id, "status": consumer.status, **({"reason": reason} if reason else {})}
    outbox.add(session, aggregate_id=consumer.id, event_type=event_type, data=data)
