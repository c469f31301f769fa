"""The event outbox as operators see it: what the relay delivered, what waits, what is dead and its retry."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from api.auth import Principal, Role, require_roles
from api.deps import DbSession, Limit, Offset
from api.errors import ErrorResponse
from api.schemas import ApiModel, Page
from storage.models import OutboxEvent
from storage.repositories import outbox

router = APIRouter(prefix="/events", tags=["events"])
Operator = Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.GOVERNANCE))]
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 403, 404, 409, 422)}


class EventOut(ApiModel):
    sequence: int = Field(description="Position in the outbox; a service's events are relayed in this order.")
    event_id: str = Field(description="The CloudEvents id (Kafka header ce_id): consumers drop repeats by it.")
    service_id: str
    event_type: str
    status: str = Field(description="pending, delivered or dead.")
    attempts: int = Field(description="Failed delivery attempts so far.")
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime | None = Field(description="A pending event is not sent again before this.")
    delivered_at: datetime | None
    dead_at: datetime | None
    payload: dict[str, Any] = Field(description="The CloudEvents envelope, as produced to Kafka.")


class EventPage(Page[EventOut]):
    """A page of outbox events, newest first."""


def _event_out(event: OutboxEvent) -> EventOut:
    return EventOut(
        sequence=event.id,
        event_id=event.event_id,
        service_id=event.aggregate_id,
        event_type=event.event_type,
        status=event.status,
        attempts=event.attempts,
        last_error=event.last_error,
        created_at=event.created_at,
        next_attempt_at=event.next_attempt_at,
        delivered_at=event.delivered_at,
        dead_at=event.dead_at,
        payload=event.payload,
    )


@router.get("", response_model=EventPage, responses=ERRORS, summary="Outbox events")
def list_events(
    session: DbSession,
    _principal: Operator,
    status: Annotated[str | None, Query(pattern="^(pending|delivered|dead)$")] = None,
    offset: Offset = 0,
    limit: Limit = 20,
) -> EventPage:
    """Events newest first, all or by relay status (dead ones wait for a retry and hold back their service's)."""
    rows, total = outbox.list_by_status(session, status, offset, limit)
    return EventPage(items=[_event_out(e) for e in rows], total=total, offset=offset, limit=limit)


@router.post("/{event_id}/retry", response_model=EventOut, responses=ERRORS, summary="Retry a dead event")
def retry_event(event_id: str, session: DbSession, _principal: Operator) -> EventOut:
    """Put a dead event back in the queue with fresh attempts; 409 when it is not dead."""
    return _event_out(outbox.requeue(session, event_id))
