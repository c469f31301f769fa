"""Daily usage rollups: recomputed whole per day from the raw rows, read for long ranges.

The watermark (`usage_rollup_state.rolled_through`, W) makes both sides exact: a rollup row holds
exactly its day's raw rows stored (`recorded_at`) up to W. A run moves W forward to now - lag and
recomputes every day that received rows stored in between, late rows included, with upserts; the
run and the new W commit together, so a rerun or a crash mid-run never counts a row twice. A
reader adds, for whole days, the rollups and the raw rows stored after W; for the partial days at
the edges of its range, the raw rows.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, literal, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.models import UsageArchive, UsageRecord, UsageRollup, UsageRollupState, utcnow
from storage.repositories import usage
from storage.repositories.usage import NO_USAGE, Totals, UsageQuery

STATE = "usage"
KEY = ("consumer_id", "day", "service_id", "key_id", "currency")
FIGURES = (
    "requests", "errors", "input_tokens", "output_tokens", "cost", "latency_p50_ms", "latency_p95_ms",
    "latency_p99_ms", "computed_at",
)  # fmt: skip


@dataclass(frozen=True)
class RollupRun:
    previous: datetime | None  # the watermark before the run
    rolled_through: datetime  # the watermark after it
    days: list[date]  # the days recomputed
    skipped_days: list[date]  # days of archived months: left as archived (see docs/usage-lifecycle.md)


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def rolled_through(session: Session) -> datetime | None:
    """The watermark, or None before the first rollup."""
    return session.scalar(select(UsageRollupState.rolled_through).where(UsageRollupState.name == STATE))


def _lock_state(session: Session) -> UsageRollupState:
    """The state row, locked for this transaction on PostgreSQL (one rollup at a time)."""
    table: Any = UsageRollupState.__table__
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(insert(table).values(name=STATE, rolled_through=None, updated_at=utcnow()).on_conflict_do_nothing())
    stmt = select(UsageRollupState).where(UsageRollupState.name == STATE).with_for_update()
    return session.scalars(stmt).one()


def _database_now(session: Session) -> datetime:
    if session.get_bind().dialect.name == "postgresql":
        value: datetime = session.scalars(select(func.now())).one()
        return value.astimezone(UTC)
    return datetime.now(UTC)  # SQLite: recorded_at comes from this process's clock too


def roll_up(session: Session, lag: timedelta, now: datetime | None = None) -> RollupRun:
    """Move the watermark to (now - lag) and recompute every day touched since the last one."""
    state = _lock_state(session)
    previous = state.rolled_through
    through = (now or _database_now(session)) - lag
    if previous is not None and through <= previous:
        return RollupRun(previous, previous, [], [])
    touched = touched_days(session, previous, through)
    archived = archived_months(session)
    days = [d for d in touched if d.replace(day=1) not in archived]
    for first, last in _spans(days):
        _recompute(session, first, last, through)
    state.rolled_through = through
    state.updated_at = utcnow()
    session.flush()
    return RollupRun(previous, through, days, [d for d in touched if d not in days])


def touched_days(session: Session, after: datetime | None, through: datetime) -> list[date]:
    """The days (UTC) of rows stored in (after, through]."""
    where = [UsageRecord.recorded_at <= through]
    if after is not None:
        where.append(UsageRecord.recorded_at > after)
    if session.get_bind().dialect.name == "postgresql":
        day = func.date(func.timezone("UTC", UsageRecord.occurred_at))
        return sorted(session.scalars(select(day).where(*where).distinct()).all())
    # SQLite keeps UTC wall-clock text: its first ten characters are the day
    texts = session.scalars(select(func.substr(UsageRecord.occurred_at, 1, 10)).where(*where).distinct()).all()
    return sorted(date.fromisoformat(t) for t in texts)


def archived_months(session: Session) -> set[date]:
    return set(session.scalars(select(UsageArchive.month).distinct()).all())


def _spans(days: Sequence[date]) -> Iterator[tuple[date, date]]:
    """Runs of consecutive days as (first, last): one range scan each."""
    start = prev = None
    for day in days:
        if prev is not None and day == prev + timedelta(days=1):
            prev = day
            continue
        if start is not None and prev is not None:
            yield start, prev
        start = prev = day
    if start is not None and prev is not None:
        yield start, prev


_PG_RECOMPUTE = text(
    f"""
    INSERT INTO usage_rollups ({", ".join(KEY + FIGURES)})
    SELECT consumer_id, (occurred_at AT TIME ZONE 'UTC')::date, service_id, key_id, currency,
           count(*),
           count(*) FILTER (WHERE status < 200 OR status >= 300 OR error IS NOT NULL),
           sum(input_tokens), sum(output_tokens), sum(cost),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms),
           percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms),
           now()
      FROM usage_records
     WHERE occurred_at >= :start AND occurred_at < :end AND recorded_at <= :through
     GROUP BY 1, 2, 3, 4, 5
    ON CONFLICT ({", ".join(KEY)}) DO UPDATE SET
        {", ".join(f"{c} = EXCLUDED.{c}" for c in FIGURES)}
    """  # noqa: S608 (column names are the constants above)
)


def _recompute(session: Session, first: date, last: date, through: datetime) -> None:
    """Replace the rollups of the days first..last with what their raw rows stored up to `through` say."""
    start, end = day_start(first), day_start(last + timedelta(days=1))
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_PG_RECOMPUTE, {"start": start, "end": end, "through": through})
        return
    day = first
    while day <= last:  # SQLite: a day at a time, aggregated here (exact decimals, the same percentiles)
        _recompute_in_python(session, day_start(day), day_start(day + timedelta(days=1)), through)
        day += timedelta(days=1)


def _recompute_in_python(session: Session, start: datetime, end: datetime, through: datetime) -> None:
    r = UsageRecord
    stmt = select(
        r.consumer_id, r.service_id, r.key_id, r.currency, r.status, r.error, r.input_tokens, r.output_tokens,
        r.cost, r.latency_ms,
    ).where(r.occurred_at >= start, r.occurred_at < end, r.recorded_at <= through)  # fmt: skip
    groups: dict[tuple[str, str, str, str], _Group] = defaultdict(_Group)
    for consumer, service, key, currency, status, error, tokens_in, tokens_out, cost, latency in session.execute(stmt):
        groups[(consumer, service, key, currency)].add(status, error, tokens_in, tokens_out, cost, latency)
    rows = [
        {"consumer_id": k[0], "day": start.date(), "service_id": k[1], "key_id": k[2], "currency": k[3], **g.figures()}
        for k, g in groups.items()
    ]
    if rows:
        table: Any = UsageRollup.__table__
        stmt_up = sqlite.insert(table)
        update = {c: getattr(stmt_up.excluded, c) for c in FIGURES}
        session.execute(stmt_up.on_conflict_do_update(index_elements=list(KEY), set_=update), rows)


class _Group:
    def __init__(self) -> None:
        self.requests = self.errors = self.input_tokens = self.output_tokens = 0
        self.cost = Decimal(0)
        self.latencies: list[float] = []

    def add(self, status: int, error: str | None, tokens_in: int, tokens_out: int, cost: Decimal, ms: float) -> None:
        self.requests += 1
        self.errors += 0 if (200 <= status < 300 and error is None) else 1
        self.input_tokens += tokens_in
        self.output_tokens += tokens_out
        self.cost += cost
        self.latencies.append(ms)

    def figures(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "requests": self.requests,
            "errors": self.errors,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost": self.cost,
            "latency_p50_ms": percentile(ordered, 0.5),
            "latency_p95_ms": percentile(ordered, 0.95),
            "latency_p99_ms": percentile(ordered, 0.99),
            "computed_at": utcnow(),
        }


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks, as PostgreSQL's percentile_cont."""
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --- reading ---


def _ceil_day(moment: datetime) -> date:
    day = moment.astimezone(UTC).date()
    return day if day_start(day) == moment else day + timedelta(days=1)


def totals(session: Session, q: UsageQuery) -> Totals:
    """The same figures as `usage.totals(q)`, with whole days read from the rollups."""
    watermark = rolled_through(session)
    if watermark is None:
        return usage.totals(session, q)
    if session.get_bind().dialect.name == "postgresql":
        # psycopg prepares a statement run often and PostgreSQL may then plan it once for any
        # parameters: such a plan cannot know that `recorded_at > W` is a handful of rows (seen: a
        # heavy consumer's year went from 20 ms to 700 ms, scanning all its rows by consumer)
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    first = None if q.start is None else _ceil_day(q.start)
    end = None if q.end is None else q.end.astimezone(UTC).date()
    if first is not None and end is not None and first >= end:
        return usage.totals(session, q)  # no whole day in the range
    result = rolled_totals(session, q, first, end)
    whole_from = None if first is None else day_start(first)
    whole_to = None if end is None else day_start(end)
    result += usage.totals(session, _with(q, start=whole_from, end=whole_to, recorded_after=watermark))
    if q.start is not None and whole_from is not None and q.start < whole_from:
        result += usage.totals(session, _with(q, end=whole_from))
    if q.end is not None and whole_to is not None and whole_to < q.end:
        result += usage.totals(session, _with(q, start=whole_to))
    return result


def _with(q: UsageQuery, **changes: Any) -> UsageQuery:
    return UsageQuery(**{**q.__dict__, **changes})


def rolled_totals(session: Session, q: UsageQuery, first: date | None, end: date | None) -> Totals:
    """Sums of the rollups of days in [first, end) for the query's consumer and service."""
    u = UsageRollup
    where: list[Any] = []
    if q.consumer_id is not None:
        where.append(u.consumer_id == q.consumer_id)
    if q.service_id is not None:
        where.append(u.service_id == q.service_id)
    if first is not None:
        where.append(u.day >= first)
    if end is not None:
        where.append(u.day < end)
    if session.get_bind().dialect.name != "postgresql":
        rows = session.execute(select(u.currency, u.requests, u.input_tokens, u.output_tokens, u.cost).where(*where))
        return _sum(rows)
    stmt = select(
        u.currency,
        func.coalesce(func.sum(u.requests), literal(0)),
        func.coalesce(func.sum(u.input_tokens), literal(0)),
        func.coalesce(func.sum(u.output_tokens), literal(0)),
        func.coalesce(func.sum(u.cost), literal(0)),
    ).where(*where)
    return _sum(session.execute(stmt.group_by(u.currency)))


def _sum(rows: Iterable[Any]) -> Totals:
    result = NO_USAGE
    for currency, requests, tokens_in, tokens_out, cost in rows:
        result += Totals(int(requests), int(tokens_in), int(tokens_out), {currency: Decimal(str(cost))})
    return result


def rollups_of(session: Session, consumer_id: str, first: date, end: date) -> Sequence[UsageRollup]:
    """A consumer's rollup rows of the days in [first, end), by day."""
    u = UsageRollup
    stmt = select(u).where(u.consumer_id == consumer_id, u.day >= first, u.day < end)
    return session.scalars(stmt.order_by(u.day, u.service_id, u.key_id)).all()
