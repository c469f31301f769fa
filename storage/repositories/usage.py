"""Usage records: idempotent batch inserts, monthly partitions, reads with totals."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from storage.models import UsageRecord


def month_start(moment: datetime, offset: int = 0) -> datetime:
    """The first instant (UTC) of the month `offset` months after `moment`'s."""
    index = moment.year * 12 + moment.month - 1 + offset
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(month: datetime) -> str:
    return f"usage_records_{month:%Y_%m}"


def create_partition(session: Session, month: datetime) -> bool:
    """On PostgreSQL, the partition of the month starting at `month`; False when it already existed."""
    name = partition_name(month)
    if session.scalar(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name}):
        return False
    end = month_start(month, 1)
    # bounds with an explicit UTC offset: a bare date would be read in the session's time zone
    session.execute(
        text(
            f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF usage_records "
            f"FOR VALUES FROM ('{month:%Y-%m-%d} 00:00:00+00') TO ('{end:%Y-%m-%d} 00:00:00+00')"
        )
    )
    return True


def ensure_partitions(session: Session, moments: Iterable[datetime]) -> list[str]:
    """On PostgreSQL, the monthly partitions holding these instants (and the month after each);
    returns the names of those it had to create."""
    if session.get_bind().dialect.name != "postgresql":
        return []
    months = {month_start(m, k) for m in moments for k in (0, 1)}
    return [partition_name(start) for start in sorted(months) if create_partition(session, start)]


COLUMNS = (
    "request_id", "occurred_at", "consumer_id", "key_id", "service_id", "service_version", "subscription_id",
    "route", "status", "latency_ms", "ttfb_ms", "input_tokens", "output_tokens", "cost", "currency", "stream",
    "error",
)  # fmt: skip
PG_TYPES = (
    "text", "timestamptz", "text", "text", "text", "text", "text", "text", "int", "float8", "float8", "int", "int",
    "numeric", "text", "bool", "text",
)  # fmt: skip
# One statement per batch whatever its size: each column travels as one array (adapted in C by
# psycopg), instead of an INSERT per row (executemany) or a statement text growing with the batch.
# (column names and types are the constants above, never input)
_PG_INSERT = text(
    f"INSERT INTO usage_records ({', '.join(COLUMNS)}) "  # noqa: S608
    f"SELECT * FROM unnest({', '.join(f'CAST(:{c} AS {t}[])' for c, t in zip(COLUMNS, PG_TYPES, strict=True))}) "
    "ON CONFLICT DO NOTHING RETURNING request_id"
)


def insert_records(session: Session, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Store the rows; one already stored (same request id and time) is skipped, not an error.

    Returns the rows this call stored (what quota counters may add: a record handed off twice is
    returned by the insert that stored it, and only by that one)."""
    if not rows:
        return []
    if session.get_bind().dialect.name == "postgresql":
        stored = session.execute(_PG_INSERT, {c: [row[c] for row in rows] for c in COLUMNS}).scalars().all()
    else:
        # the table, not the ORM class: a plain executemany, without the ORM's bulk bookkeeping per row
        table: Any = UsageRecord.__table__
        insert = sqlite.insert(table).on_conflict_do_nothing().returning(table.c.request_id)
        stored = session.execute(insert, list(rows)).scalars().all()
    new = set(stored)
    added = []
    for row in rows:  # a batch may carry a record twice (stream and journal): its first copy stands for it
        if row["request_id"] in new:
            new.discard(row["request_id"])
            added.append(row)
    return added


@dataclass(frozen=True)
class UsageQuery:
    consumer_id: str | None = None
    service_id: str | None = None
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    recorded_after: datetime | None = None  # only rows stored after this (those not yet in the rollups)


@dataclass(frozen=True)
class Totals:
    requests: int
    input_tokens: int
    output_tokens: int
    cost: dict[str, Decimal]  # per currency

    def __add__(self, other: Totals) -> Totals:
        cost = dict(self.cost)
        for currency, amount in other.cost.items():
            cost[currency] = cost.get(currency, Decimal(0)) + amount
        return Totals(
            self.requests + other.requests,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            cost,
        )


NO_USAGE = Totals(0, 0, 0, {})


def _where(q: UsageQuery) -> list[Any]:
    clauses: list[Any] = []
    if q.consumer_id is not None:
        clauses.append(UsageRecord.consumer_id == q.consumer_id)
    if q.service_id is not None:
        clauses.append(UsageRecord.service_id == q.service_id)
    if q.start is not None:
        clauses.append(UsageRecord.occurred_at >= q.start)
    if q.end is not None:
        clauses.append(UsageRecord.occurred_at < q.end)
    if q.recorded_after is not None:
        clauses.append(UsageRecord.recorded_at > q.recorded_after)
    return clauses


def page_records(session: Session, q: UsageQuery, offset: int, limit: int) -> Sequence[UsageRecord]:
    """A page of records, newest first (without counting them: the rollups know how many)."""
    stmt = select(UsageRecord).where(*_where(q)).order_by(UsageRecord.occurred_at.desc(), UsageRecord.request_id)
    return session.scalars(stmt.offset(offset).limit(limit)).all()


def list_records(session: Session, q: UsageQuery, offset: int, limit: int) -> tuple[Sequence[UsageRecord], int]:
    """A page of records, newest first, and how many match."""
    where = _where(q)
    total = session.scalar(select(func.count()).select_from(UsageRecord).where(*where)) or 0
    stmt = select(UsageRecord).where(*where).order_by(UsageRecord.occurred_at.desc(), UsageRecord.request_id)
    return session.scalars(stmt.offset(offset).limit(limit)).all(), int(total)


def totals(session: Session, q: UsageQuery) -> Totals:
    """Calls, tokens and cost (per currency) of everything matching."""
    if session.get_bind().dialect.name == "sqlite":
        return _totals_in_python(session, q)
    stmt = (
        select(
            UsageRecord.currency,
            func.count(),
            func.coalesce(func.sum(UsageRecord.input_tokens), 0),
            func.coalesce(func.sum(UsageRecord.output_tokens), 0),
            func.coalesce(func.sum(UsageRecord.cost), 0),
        )
        .where(*_where(q))
        .group_by(UsageRecord.currency)
    )
    requests = input_tokens = output_tokens = 0
    cost: dict[str, Decimal] = {}
    for currency, count, tokens_in, tokens_out, amount in session.execute(stmt):
        requests += int(count)
        input_tokens += int(tokens_in)
        output_tokens += int(tokens_out)
        cost[currency] = Decimal(str(amount))
    return Totals(requests, input_tokens, output_tokens, cost)


def count_requests(session: Session, request_ids: Sequence[str]) -> dict[str, int]:
    """How many rows each request id has (tests and benchmarks check exactly-once with it)."""
    counts: dict[str, int] = {}
    for start in range(0, len(request_ids), 1000):
        chunk = request_ids[start : start + 1000]
        stmt = select(UsageRecord.request_id, func.count()).where(UsageRecord.request_id.in_(chunk))
        for request_id, count in session.execute(stmt.group_by(UsageRecord.request_id)):
            counts[request_id] = int(count)
    return counts


def _totals_in_python(session: Session, q: UsageQuery) -> Totals:
    """SQLite keeps amounts as text (storage.models.Money): summed here as Decimals, exactly."""
    stmt = select(UsageRecord.currency, UsageRecord.input_tokens, UsageRecord.output_tokens, UsageRecord.cost)
    requests = input_tokens = output_tokens = 0
    cost: dict[str, Decimal] = {}
    for currency, tokens_in, tokens_out, amount in session.execute(stmt.where(*_where(q))):
        requests += 1
        input_tokens += tokens_in
        output_tokens += tokens_out
        cost[currency] = cost.get(currency, Decimal(0)) + amount
    return Totals(requests, input_tokens, output_tokens, cost)
