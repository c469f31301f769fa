"""Outbox relay bookkeeping on SQLite and PostgreSQL: what is due, backoff, dead letters, retries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.errors import ConflictError, NotFoundError
from storage.database import session_scope
from storage.repositories import outbox

BACKOFF = outbox.Backoff(base_seconds=1.0, max_seconds=4.0)


def add_events(*aggregates: str) -> list[int]:
    with session_scope() as session:
        events = [outbox.add(session, aggregate_id=a, event_type="service_updated", data={}) for a in aggregates]
        session.flush()  # the relay's order is assigned by the database
        return [event.id for event in events]


def due_ids(now: datetime | None = None, limit: int = 100) -> list[int]:
    with session_scope() as session:
        return [e.id for e in outbox.due_pending(session, limit=limit, now=now)]


def fail(ids: list[int], max_attempts: int = 3, now: datetime | None = None) -> list[tuple[str, int]]:
    with session_scope() as session:
        errors = {i: "broker away" for i in ids}
        changed = outbox.record_failures(session, errors, max_attempts=max_attempts, backoff=BACKOFF, now=now)
        return [(e.status, e.attempts) for e in changed]


def test_due_events_come_in_id_order_and_a_failing_event_holds_back_its_service(database_url: str) -> None:
    a1, b1, a2, b2 = add_events("a", "b", "a", "b")
    assert due_ids() == [a1, b1, a2, b2]
    assert due_ids(limit=2) == [a1, b1]
    now = datetime.now(UTC)
    assert fail([a1], now=now) == [("pending", 1)]
    assert due_ids(now=now) == [b1, b2]  # a2 waits behind a1's backoff
    assert due_ids(now=now + timedelta(seconds=1)) == [a1, b1, a2, b2]


def test_backoff_doubles_to_a_ceiling_and_the_last_attempt_makes_it_dead(database_url: str) -> None:
    event_id, _later = add_events("a", "a")
    now = datetime.now(UTC)
    assert [BACKOFF.after(n).total_seconds() for n in (1, 2, 3, 4, 10)] == [1, 2, 4, 4, 4]
    assert fail([event_id], now=now) == [("pending", 1)]
    assert fail([event_id], now=now) == [("pending", 2)]
    assert fail([event_id], now=now) == [("dead", 3)]
    assert fail([event_id], now=now) == []  # only pending events count attempts
    with session_scope() as session:
        (dead,), total = outbox.list_by_status(session, "dead", 0, 10)
        assert (total, dead.id, dead.last_error, dead.next_attempt_at) == (1, event_id, "broker away", None)
        assert dead.dead_at is not None
    assert due_ids(now=now + timedelta(days=1)) == []  # a dead event holds back its service's later ones


def test_a_dead_event_is_requeued_once_and_a_late_ack_still_counts(database_url: str) -> None:
    first, second = add_events("a", "a")
    fail([first], max_attempts=1)
    with session_scope() as session:
        with pytest.raises(NotFoundError):
            outbox.requeue(session, "no-such-event")
        event_id = outbox.list_by_status(session, "dead", 0, 1)[0][0].event_id
        requeued = outbox.requeue(session, event_id)
        assert (requeued.status, requeued.attempts, requeued.dead_at) == ("pending", 0, None)
        with pytest.raises(ConflictError):
            outbox.requeue(session, event_id)
    assert due_ids() == [first, second]
    fail([second], max_attempts=1)
    with session_scope() as session:
        assert outbox.mark_delivered(session, [first, second]) == 2  # the dead one was on the topic after all
    with session_scope() as session:
        delivered, total = outbox.list_by_status(session, "delivered", 0, 10)
        assert total == 2 and [e.id for e in delivered] == [second, first]  # newest first
        assert all(e.delivered_at is not None and e.dead_at is None for e in delivered)
        page, total = outbox.list_by_status(session, None, 1, 1)
        assert total == 2 and [e.id for e in page] == [first]
