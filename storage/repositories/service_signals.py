"""What is known about each service's use and health: the `service_signals` rows search ranks by.

Two kinds of writer share a row, and neither may erase the other's figures: `upsert` writes only
the fields it is given (the provider-health flow gives availability and latency; the refresh
below gives calls). Every write that changes a row marks the service changed, so cached search
pages (and reads) built on the old figures are dropped when the transaction commits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, Table, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.database import mark_services_changed
from storage.models import Service, ServiceSignal, UsageRecord, utcnow

WINDOW = timedelta(days=30)
SIGNALS: Table = ServiceSignal.__table__  # type: ignore[assignment]
FIELDS = ("calls_30d", "availability", "latency_p50_ms", "latency_p95_ms")


@dataclass(frozen=True)
class Signals:
    service_id: str
    calls_30d: int
    availability: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    updated_at: datetime


def _checked(field: str, value: Any) -> Any:
    """The value if it is one the field can hold; a ValueError naming the field otherwise."""
    if value is None:
        if field == "calls_30d":
            raise ValueError("calls_30d cannot be null (0 when there were no calls)")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{field} must be a finite number, got {value!r}")
    if field == "calls_30d" and (not isinstance(value, int) or value < 0):
        raise ValueError(f"calls_30d must be a whole number >= 0, got {value!r}")
    if field == "availability" and not 0 <= value <= 100:
        raise ValueError(f"availability is a percentage (0-100), got {value!r}")
    if field.startswith("latency") and value < 0:
        raise ValueError(f"{field} must be >= 0 ms, got {value!r}")
    return value


def _insert(session: Session) -> Any:
    return postgresql.insert(SIGNALS) if session.get_bind().dialect.name == "postgresql" else sqlite.insert(SIGNALS)


def upsert(session: Session, service_id: str, *, now: datetime | None = None, **figures: float | int | None) -> None:
    """Set some of a service's figures (`calls_30d`, `availability` in percent, `latency_p50_ms`,
    `latency_p95_ms`), creating its row if needed; figures not given keep their value.

    A figure given as None means "no longer known" (not allowed for `calls_30d`). Bad names or
    values raise ValueError before anything is written.
    """
    unknown = set(figures) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown signal(s) {sorted(unknown)}; known: {list(FIELDS)}")
    if not figures:
        raise ValueError("nothing to record: give at least one of " + ", ".join(FIELDS))
    values = {field: _checked(field, value) for field, value in figures.items()}
    values["updated_at"] = now or utcnow()
    statement = _insert(session).values(service_id=service_id, **values)
    session.execute(statement.on_conflict_do_update(index_elements=[SIGNALS.c.service_id], set_=values))
    mark_services_changed(session, [service_id])


def refresh_calls(session: Session, now: datetime | None = None) -> list[str]:
    """Recount every service's calls in the 30 days before `now` from the usage records.

    One upsert from a grouped count, then services that had calls and have none in the window
    go back to 0. Rows whose count did not move are left alone; returns the ids that changed
    (for an index that holds a copy of the figures). Running it twice changes nothing the second time.
    """
    now = now or utcnow()
    since = now - WINDOW
    window = (UsageRecord.occurred_at >= since, UsageRecord.occurred_at < now)
    counted = (
        select(
            UsageRecord.service_id,
            func.count().label("calls_30d"),
            literal(now, DateTime(timezone=True)).label("updated_at"),
        )
        # Only services that exist (the usage records hold no foreign key).
        .where(*window, UsageRecord.service_id.in_(select(Service.id)))
        .group_by(UsageRecord.service_id)
    )
    insert = _insert(session).from_select(["service_id", "calls_30d", "updated_at"], counted)
    excluded = insert.excluded
    upserted = insert.on_conflict_do_update(
        index_elements=[SIGNALS.c.service_id],
        set_={"calls_30d": excluded.calls_30d, "updated_at": excluded.updated_at},
        where=SIGNALS.c.calls_30d != excluded.calls_30d,
    ).returning(SIGNALS.c.service_id)
    changed = list(session.execute(upserted).scalars())
    active = select(UsageRecord.service_id).where(*window)
    zeroed = (
        update(SIGNALS)
        .where(SIGNALS.c.calls_30d != 0, SIGNALS.c.service_id.not_in(active))
        .values(calls_30d=0, updated_at=now)
        .returning(SIGNALS.c.service_id)
    )
    changed += session.execute(zeroed).scalars()
    if changed:
        mark_services_changed(session, changed)
    return changed


def get_many(session: Session, service_ids: Iterable[str]) -> dict[str, Signals]:
    """The signals of these services (those that have a row)."""
    ids = list(service_ids)
    if not ids:
        return {}
    rows = session.execute(select(SIGNALS).where(SIGNALS.c.service_id.in_(ids)))
    return {row.service_id: Signals(**row._mapping) for row in rows}


def get(session: Session, service_id: str) -> Signals | None:
    return get_many(session, [service_id]).get(service_id)


def updated_since(session: Session, since: datetime) -> dict[str, Signals]:
    """The signals written at or after `since` (by any writer)."""
    rows = session.execute(select(SIGNALS).where(SIGNALS.c.updated_at >= since))
    return {row.service_id: Signals(**row._mapping) for row in rows}
