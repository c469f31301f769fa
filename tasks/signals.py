"""Keeping the service signals (calls in the last 30 days) current, and the search index in step."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task
from pydantic import BaseModel

from storage.database import session_scope
from storage.repositories import service_signals
from tasks._common import backoff, jitter
from tasks.context import flow_context


class RefreshInput(BaseModel):
    now: datetime | None = None  # the end of the 30-day window; now when not given


class PushInput(BaseModel):
    service_ids: list[str] = []  # these, whatever their age
    updated_since: datetime | None = None  # and every row written since then (the health flow's)


@task(name="refresh-calls-30d", retries=3, retry_delay_seconds=backoff(3), retry_jitter_factor=jitter())
def refresh_calls(inp: RefreshInput) -> list[str]:
    """Recount calls per service over the last 30 days; returns the ids whose count moved."""
    with session_scope() as session:
        return service_signals.refresh_calls(session, inp.now or datetime.now(UTC))


@task(name="push-signals-to-search", retries=3, retry_delay_seconds=backoff(3), retry_jitter_factor=jitter())
def push_signals(inp: PushInput) -> int:
    """Copy signals into a search index that keeps its own copy (Elasticsearch); the SQL backend
    reads the table directly and has nothing to do. Returns how many documents were updated."""
    index = flow_context().search_index
    with session_scope() as session:
        rows = service_signals.get_many(session, inp.service_ids)
        if inp.updated_since is not None:
            rows.update(service_signals.updated_since(session, inp.updated_since))
    return index.update_signals(rows.values())
