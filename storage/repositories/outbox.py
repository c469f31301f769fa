"""The transactional outbox: events stored with the change they report, relayed later."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, CursorResult, and_, func, or_, select, text, update
from sqlalchemy.orm import Session

from core.errors import ConflictError, NotFoundError
from storage.models import OutboxEvent, new_id
from storage.repositories import paging

EVENT_SCHEMA_VERSION = "1.0"


def add(session: Session, *, aggregate_id: str, event_type: str, data: dict[str, Any]) -> OutboxEvent:
    """Queue an event in the caller's transaction. Written with the caller's next flush or commit; its
    `id` (the relay's order) is assigned then."""
    queued = event(aggregate_id=aggregate_id, event_type=event_type, data=data)
    session.add(queued)
    return queued


def event(*, aggregate_id: str, event_type: str, data: dict[str, Any]) -> OutboxEvent:
    """An event (CloudEvents-style envelope), not added to any session yet."""
    event_id = new_id()
    payload = {
        "specversion": "1.0",
        "id": event_id,
        "source": "/marketplace/publishing",
        "type": f"marketplace.{event_type}",
        "subject": aggregate_id,
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "dataschemaversion": EVENT_SCHEMA_VERSION,
        "data": data,
    }
    return OutboxEvent(event_id=event_id, aggregate_id=aggregate_id, event_type=event_type, payload=payload)


def for_aggregate(session: Session, aggregate_id: str) -> Sequence[OutboxEvent]:
    """Events about one service, in the order they were written."""
    query = select(OutboxEvent).where(OutboxEvent.aggregate_id == aggregate_id).order_by(OutboxEvent.id)
    return session.scalars(query).all()


# --- Relay side: what to send next, what happened to it, and what operators retry. ---

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
# Any fixed 64-bit number, the same in every relay: PostgreSQL advisory locks are per database.
RELAY_LOCK_KEY = 0x6D6B745F72656C61


@dataclass(frozen=True)
class Backoff:
    """Exponential waits between delivery attempts: base, 2 base, 4 base ... up to a ceiling."""

    base_seconds: float
    max_seconds: float

    def after(self, attempts: int) -> timedelta:
        """The wait after the `attempts`-th failed attempt."""
        exponent = min(max(attempts - 1, 0), 32)  # 2**32 times any base is past every sensible ceiling
        return timedelta(seconds=min(self.base_seconds * 2**exponent, self.max_seconds))


def due_pending(session: Session, *, limit: int, now: datetime | None = None) -> Sequence[OutboxEvent]:
    """Pending events whose next attempt is due, in id order, up to `limit`.

    An event waiting out its backoff, or dead, holds back every later event of its service:
    a service's events reach the topic in the order they were written, even across failures.
    """
    now = now or datetime.now(UTC)
    held_back = or_(OutboxEvent.status == DEAD, and_(OutboxEvent.status == PENDING, OutboxEvent.next_attempt_at > now))
    # Few rows (the failing ones), found through the (status, id) index.
    blockers = (
        select(OutboxEvent.aggregate_id, func.min(OutboxEvent.id).label("first_id"))
        .where(held_back)
        .group_by(OutboxEvent.aggregate_id)
        .subquery()
    )
    query = (
        select(OutboxEvent)
        .outerjoin(blockers, blockers.c.aggregate_id == OutboxEvent.aggregate_id)
        .where(
            OutboxEvent.status == PENDING,
            or_(OutboxEvent.next_attempt_at.is_(None), OutboxEvent.next_attempt_at <= now),
            or_(blockers.c.first_id.is_(None), OutboxEvent.id < blockers.c.first_id),
        )
        .order_by(OutboxEvent.id)
        .limit(limit)
    )
    return session.scalars(query).all()


def mark_delivered(session: Session, ids: Collection[int], now: datetime | None = None) -> int:
    """Record the broker's acknowledgement of events (by row id); returns how many changed.

    A dead event acknowledged late (the producer kept retrying it) is delivered too: it is on the topic.
    """
    if not ids:
        return 0
    query = (
        update(OutboxEvent)
        .where(OutboxEvent.id.in_(list(ids)), OutboxEvent.status.in_((PENDING, DEAD)))
        .values(status=DELIVERED, delivered_at=now or datetime.now(UTC), next_attempt_at=None, dead_at=None)
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], session.execute(query)).rowcount


def record_failures(
    session: Session, errors: Mapping[int, str], *, max_attempts: int, backoff: Backoff, now: datetime | None = None
) -> list[OutboxEvent]:
    """Count a failed attempt for each pending event (row id → error): its next attempt waits out the
    backoff, and its `max_attempts`-th failure makes it dead. Returns the events changed."""
    if not errors:
        return []
    now = now or datetime.now(UTC)
    query = select(OutboxEvent).where(OutboxEvent.id.in_(list(errors)), OutboxEvent.status == PENDING)
    events = list(session.scalars(query.order_by(OutboxEvent.id).with_for_update()))
    for event in events:
        event.attempts += 1
        event.last_error = errors[event.id][:2000]
        if event.attempts >= max_attempts:
            event.status, event.dead_at, event.next_attempt_at = DEAD, now, None
        else:
            event.next_attempt_at = now + backoff.after(event.attempts)
    session.flush()
    return events


def list_by_status(session: Session, status: str | None, offset: int, limit: int) -> tuple[Sequence[OutboxEvent], int]:
    """A page of events (all, or those in `status`), newest first, and the total."""
    query = select(OutboxEvent)
    if status:
        query = query.where(OutboxEvent.status == status)
    return paging.page(session, query, (OutboxEvent.id.desc(),), offset, limit)


def requeue(session: Session, event_id: str) -> OutboxEvent:
    """Give a dead event (by its CloudEvents id) a fresh set of attempts; NotFoundError, or ConflictError
    when it is not dead. Its last error stays for the record until the next attempt replaces it."""
    event = session.scalars(select(OutboxEvent).where(OutboxEvent.event_id == event_id).with_for_update()).one_or_none()
    if event is None:
        raise NotFoundError(f"event {event_id} not found")
    if event.status != DEAD:
        raise ConflictError(f"event {event_id} is {event.status}; only a dead event is retried")
    event.status, event.attempts, event.next_attempt_at, event.dead_at = PENDING, 0, None, None
    session.flush()
    return event


def try_lock_relay(connection: Connection) -> bool:
    """Make this connection the relay's (PostgreSQL advisory lock, held until the connection closes):
    one relay produces at a time. SQLite is one file on one host, so there it is always granted."""
    if connection.dialect.name != "postgresql":
        return True
    return bool(connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": RELAY_LOCK_KEY}).scalar())


def holds_relay_lock(connection: Connection) -> bool:
    """Whether this connection still holds the relay's lock (raises if the connection is gone)."""
    if connection.dialect.name != "postgresql":
        return True
    held = text(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND objsubid = 1 AND pid = pg_backend_pid() AND ((classid::bigint << 32) | objid::bigint) = :key)"
    )
    return bool(connection.execute(held, {"key": RELAY_LOCK_KEY}).scalar())
