"""The transactional outbox: events stored with the change they report, relayed later."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import OutboxEvent

EVENT_SCHEMA_VERSION = "1.0"


def add(session: Session, *, aggregate_id: str, event_type: str, data: dict[str, Any]) -> OutboxEvent:
    """Queue an event in the caller's transaction (CloudEvents-style envelope)."""
    event = OutboxEvent(aggregate_id=aggregate_id, event_type=event_type, payload={})
    session.add(event)
    session.flush()  # assigns event_id
    event.payload = {
        "specversion": "1.0",
        "id": event.event_id,
        "source": "/marketplace/publishing",
        "type": f"marketplace.{event_type}",
        "subject": aggregate_id,
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "dataschemaversion": EVENT_SCHEMA_VERSION,
        "data": data,
    }
    session.flush()
    return event


def for_aggregate(session: Session, aggregate_id: str) -> Sequence[OutboxEvent]:
    """Events about one service, in the order they were written."""
    query = select(OutboxEvent).where(OutboxEvent.aggregate_id == aggregate_id).order_by(OutboxEvent.id)
    return session.scalars(query).all()
