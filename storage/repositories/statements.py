"""Monthly statements: issued once per party, month and currency from the usage rows; never changed.

A consumer's statement is what it owes (the cost of its calls and its plans' monthly prices, per
service); a provider's is what its services earned, less the marketplace's fee. A plan's price is
billed for the share of the month its subscription was active (to the microsecond), so a
subscription that starts on the 16th of a 30-day month owes half; it is billed even in a month
without calls. Amounts are Decimals end to end: the database
sums NUMERIC on PostgreSQL, Python sums the exact text on SQLite (storage.models.Money). Lines keep
the exact sums (12 decimal places); the statement's `total` is its net rounded to the cent once,
so it equals the sum of its usage rows rounded to the cent.

Issuing is idempotent: the unique (party_type, party_id, period, currency) constraint makes a rerun,
or a second run at the same moment, find the statement issued instead of issuing another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import NotFoundError, SpecValidationError
from storage.models import (
    Service,
    ServiceSubscription,
    Statement,
    StatementAdjustment,
    StatementLine,
    UsageRecord,
    new_id,
)
from storage.repositories import audit, outbox, paging
from storage.repositories.services import Actor

CONSUMER, PROVIDER = "consumer", "provider"
CENT = Decimal("0.01")
EXACT = Decimal("1e-12")  # the Money columns' scale
ZERO = Decimal(0)
DEFAULT_CURRENCY = "USD"  # what the gateway charges in when a service's pricing names no currency
MICROSECOND = timedelta(microseconds=1)


def period_of(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


def previous_period(moment: datetime) -> str:
    """The calendar month (UTC) before `moment`'s, e.g. '2026-11' on 2026-12-01."""
    index = moment.year * 12 + moment.month - 2
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def period_bounds(period: str) -> tuple[datetime, datetime]:
    """The first instant of the month and of the month after (UTC); SpecValidationError when malformed."""
    try:
        year, month = (int(part) for part in period.split("-"))
        start = datetime(year, month, 1, tzinfo=UTC)
    except ValueError as exc:
        raise SpecValidationError(
            "a period is a month, YYYY-MM", [{"pointer": "/period", "message": f"{period!r} is not YYYY-MM"}]
        ) from exc
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start, end


@dataclass(frozen=True)
class Party:
    party_type: str  # consumer | provider
    party_id: str


def parties(session: Session, period: str) -> list[Party]:
    """Every consumer that made calls or held a paid plan in the month, and every provider of those services."""
    start, end = period_bounds(period)
    in_month = (UsageRecord.occurred_at >= start, UsageRecord.occurred_at < end)
    consumers = set(session.scalars(select(UsageRecord.consumer_id).where(*in_month).distinct()))
    paying = _paid_plans(start, end)
    consumers |= set(session.scalars(select(ServiceSubscription.consumer_id).where(*paying).distinct()))
    called = select(UsageRecord.service_id).where(*in_month).distinct()
    subscribed = select(ServiceSubscription.service_id).where(*paying).distinct()
    chosen = or_(Service.id.in_(called), Service.id.in_(subscribed))
    providers = session.scalars(select(Service.provider_id).where(chosen).distinct()).all()
    return [Party(CONSUMER, c) for c in sorted(consumers)] + [Party(PROVIDER, p) for p in sorted(providers)]


def _paid_plans(start: datetime, end: datetime) -> tuple[Any, ...]:
    """Subscriptions with a monthly price that were active at some moment of [start, end)."""
    return (
        ServiceSubscription.price_per_month > 0,
        ServiceSubscription.activated_at.is_not(None),
        ServiceSubscription.activated_at < end,
        or_(ServiceSubscription.ended_at.is_(None), ServiceSubscription.ended_at > start),
    )


@dataclass
class Sums:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = field(default_factory=Decimal)
    plan_fees: Decimal = field(default_factory=Decimal)


def usage_by_service(session: Session, party: Party, start: datetime, end: datetime) -> dict[tuple[str, str], Sums]:
    """(service id, currency) -> sums of the party's usage rows in [start, end)."""
    if party.party_type == CONSUMER:
        who = UsageRecord.consumer_id == party.party_id
    else:
        who = UsageRecord.service_id.in_(select(Service.id).where(Service.provider_id == party.party_id))
    where = (who, UsageRecord.occurred_at >= start, UsageRecord.occurred_at < end)
    found: dict[tuple[str, str], Sums] = {}
    if session.get_bind().dialect.name == "sqlite":  # amounts are text there: summed here, exactly
        rows = select(
            UsageRecord.service_id, UsageRecord.currency, UsageRecord.input_tokens, UsageRecord.output_tokens,
            UsageRecord.cost,
        )  # fmt: skip
        for service_id, currency, tokens_in, tokens_out, cost in session.execute(rows.where(*where)):
            sums = found.setdefault((service_id, currency), Sums())
            sums.requests += 1
            sums.input_tokens += tokens_in
            sums.output_tokens += tokens_out
            sums.cost += cost
        return found
    grouped = (
        select(
            UsageRecord.service_id,
            UsageRecord.currency,
            func.count(),
            func.sum(UsageRecord.input_tokens),
            func.sum(UsageRecord.output_tokens),
            func.sum(UsageRecord.cost),
        )
        .where(*where)
        .group_by(UsageRecord.service_id, UsageRecord.currency)
    )
    for service_id, currency, count, tokens_in, tokens_out, cost in session.execute(grouped):
        found[(service_id, currency)] = Sums(int(count), int(tokens_in), int(tokens_out), Decimal(str(cost)))
    return found


def plan_fees_by_service(
    session: Session, party: Party, start: datetime, end: datetime
) -> dict[tuple[str, str], Decimal]:
    """(service id, currency) -> the party's plan prices for the share of [start, end) each was active."""
    if party.party_type == CONSUMER:
        who = ServiceSubscription.consumer_id == party.party_id
    else:
        who = ServiceSubscription.service_id.in_(select(Service.id).where(Service.provider_id == party.party_id))
    query = select(
        ServiceSubscription.service_id, ServiceSubscription.currency, ServiceSubscription.price_per_month,
        ServiceSubscription.activated_at, ServiceSubscription.ended_at,
    ).where(who, *_paid_plans(start, end))  # fmt: skip
    month = (end - start) // MICROSECOND
    found: dict[tuple[str, str], Decimal] = {}
    for service_id, currency, price, activated_at, ended_at in session.execute(query):
        active = (min(ended_at or end, end) - max(activated_at, start)) // MICROSECOND
        share = Decimal(str(price)) * active / month
        key = (service_id, currency or DEFAULT_CURRENCY)
        found[key] = found.get(key, ZERO) + share.quantize(EXACT, rounding=ROUND_HALF_UP)
    return found


def fee_of(gross: Decimal, percent: Decimal) -> Decimal:
    """The marketplace's cut of an amount, at the Money columns' scale (half up)."""
    return (gross * percent / 100).quantize(EXACT, rounding=ROUND_HALF_UP)


def find(session: Session, party: Party, period: str, currency: str) -> Statement | None:
    query = select(Statement).where(
        Statement.party_type == party.party_type,
        Statement.party_id == party.party_id,
        Statement.period == period,
        Statement.currency == currency,
    )
    return session.scalars(query).one_or_none()


def issue(
    session: Session, party: Party, period: str, fee_percent: Decimal, flow_run_id: str | None = None
) -> list[Statement]:
    """Issue the party's statements for the month (one per currency) that are not issued yet; returns
    the new ones. Each is written with its lines, an audit record and a `statement_issued` event."""
    start, end = period_bounds(period)
    percent = fee_percent if party.party_type == PROVIDER else ZERO
    by_currency: dict[str, dict[str, Sums]] = {}
    for (service_id, currency), sums in usage_by_service(session, party, start, end).items():
        by_currency.setdefault(currency, {})[service_id] = sums
    for (service_id, currency), fees in plan_fees_by_service(session, party, start, end).items():
        by_currency.setdefault(currency, {}).setdefault(service_id, Sums()).plan_fees = fees
    names = _service_names(session, {s for lines in by_currency.values() for s in lines})
    issued = []
    for currency, lines in sorted(by_currency.items()):
        if find(session, party, period, currency) is not None:
            continue
        statement = _build(party, period, currency, (start, end), percent, flow_run_id)
        rows = [_line(statement, service_id, names.get(service_id, service_id), sums, percent)
                for service_id, sums in sorted(lines.items())]  # fmt: skip
        _sum_into(statement, rows)
        if _insert(session, statement, rows):
            _record_issue(session, statement, rows)
            issued.append(statement)
    return issued


def _service_names(session: Session, service_ids: set[str]) -> dict[str, str]:
    if not service_ids:
        return {}
    return dict(session.execute(select(Service.id, Service.name).where(Service.id.in_(service_ids))).tuples().all())


def _build(
    party: Party, period: str, currency: str, bounds: tuple[datetime, datetime], percent: Decimal, run: str | None
) -> Statement:
    return Statement(
        id=new_id(), party_type=party.party_type, party_id=party.party_id, period=period, currency=currency,
        period_start=bounds[0], period_end=bounds[1], fee_percent=percent, flow_run_id=run,
        issued_at=datetime.now(UTC),
    )  # fmt: skip


def _line(statement: Statement, service_id: str, name: str, sums: Sums, percent: Decimal) -> StatementLine:
    gross = sums.cost + sums.plan_fees
    fee = fee_of(gross, percent)
    return StatementLine(
        statement_id=statement.id, service_id=service_id, service_name=name[:128], requests=sums.requests,
        input_tokens=sums.input_tokens, output_tokens=sums.output_tokens, gross=gross,
        plan_fees=sums.plan_fees, fee=fee, net=gross - fee,
    )  # fmt: skip


def _sum_into(statement: Statement, lines: Sequence[StatementLine]) -> None:
    """The statement's figures are the sums of its lines (so they add up exactly); total to the cent once."""
    statement.requests = sum(line.requests for line in lines)
    statement.input_tokens = sum(line.input_tokens for line in lines)
    statement.output_tokens = sum(line.output_tokens for line in lines)
    statement.gross = sum((line.gross for line in lines), ZERO)
    statement.plan_fees = sum((line.plan_fees for line in lines), ZERO)
    statement.fee = sum((line.fee for line in lines), ZERO)
    statement.net = statement.gross - statement.fee
    statement.total = statement.net.quantize(CENT, rounding=ROUND_HALF_UP)


def _insert(session: Session, statement: Statement, lines: Sequence[StatementLine]) -> bool:
    """Write it unless another run did first (the unique constraint decides; that run's statement stands)."""
    try:
        with session.begin_nested():
            session.add(statement)
            session.flush()  # the statement first: its lines refer to it
            session.add_all(lines)
            session.flush()
    except IntegrityError:
        return False
    return True


def _record_issue(session: Session, statement: Statement, lines: Sequence[StatementLine]) -> None:
    data = event_data(statement, lines=len(lines))
    audit.append(
        session,
        service_id=None,
        action="statement_issued",
        actor="statements",
        actor_role="system",
        flow_run_id=statement.flow_run_id,
        details=data,
        consumer_id=statement.party_id if statement.party_type == CONSUMER else None,
    )
    outbox.add(session, aggregate_id=statement.party_id, event_type="statement_issued", data=data)


def amount_text(value: Decimal) -> str:
    """A decimal amount as plain text without trailing zeros ("0.000123", "12")."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def event_data(statement: Statement, **extra: Any) -> dict[str, Any]:
    """The `data` of a statement event (amounts as decimal strings, never floats)."""
    return {
        "statementId": statement.id,
        "partyType": statement.party_type,
        "partyId": statement.party_id,
        "period": statement.period,
        "currency": statement.currency,
        "gross": amount_text(statement.gross),
        "planFees": amount_text(statement.plan_fees),
        "fee": amount_text(statement.fee),
        "total": format(statement.total, "f"),
        **extra,
    }


# --- Reading, and corrections. ---


@dataclass(frozen=True)
class StatementFilter:
    party_type: str | None = None
    party_id: str | None = None
    period: str | None = None


def list_statements(
    session: Session, filters: StatementFilter, offset: int, limit: int
) -> tuple[Sequence[Statement], int]:
    """A page of statements, newest month first, and how many match."""
    query = select(Statement)
    if filters.party_type:
        query = query.where(Statement.party_type == filters.party_type)
    if filters.party_id:
        query = query.where(Statement.party_id == filters.party_id)
    if filters.period:
        query = query.where(Statement.period == filters.period)
    order = (Statement.period.desc(), Statement.party_type, Statement.party_id, Statement.currency)
    return paging.page(session, query, order, offset, limit)


def get(session: Session, statement_id: str) -> Statement:
    statement = session.get(Statement, statement_id)
    if statement is None:
        raise NotFoundError(f"statement {statement_id} not found")
    return statement


def lines_for(session: Session, statement_ids: Sequence[str]) -> dict[str, list[StatementLine]]:
    """The lines of each statement, by service id (one query for a page)."""
    found: dict[str, list[StatementLine]] = {statement_id: [] for statement_id in statement_ids}
    if statement_ids:
        query = select(StatementLine).where(StatementLine.statement_id.in_(statement_ids))
        for line in session.scalars(query.order_by(StatementLine.statement_id, StatementLine.service_id)):
            found[line.statement_id].append(line)
    return found


def adjustments_for(session: Session, statement_ids: Sequence[str]) -> dict[str, list[StatementAdjustment]]:
    """The adjustments of each statement, oldest first (one query for a page)."""
    found: dict[str, list[StatementAdjustment]] = {statement_id: [] for statement_id in statement_ids}
    if statement_ids:
        query = select(StatementAdjustment).where(StatementAdjustment.statement_id.in_(statement_ids))
        for row in session.scalars(query.order_by(StatementAdjustment.created_at, StatementAdjustment.id)):
            found[row.statement_id].append(row)
    return found


def adjust(session: Session, statement_id: str, amount: Decimal, reason: str, actor: Actor) -> StatementAdjustment:
    """A correction to an issued statement, as a separate entry (audited, evented); the statement stays."""
    statement = get(session, statement_id)
    if amount == 0 or amount != amount.quantize(EXACT):
        raise SpecValidationError(
            "an adjustment is a non-zero amount with at most 12 decimal places",
            [{"pointer": "/amount", "message": "must be non-zero, at most 12 decimal places"}],
        )
    adjustment = StatementAdjustment(statement_id=statement.id, amount=amount, reason=reason, created_by=actor.id)
    session.add(adjustment)
    session.flush()
    data = event_data(statement, adjustmentId=adjustment.id, amount=amount_text(amount), reason=reason)
    audit.append(
        session,
        service_id=None,
        action="statement_adjusted",
        actor=actor.id,
        actor_role=actor.role,
        reason=reason,
        details=data,
        actor_ip=actor.ip,
        user_agent=actor.user_agent,
        after={"adjustmentId": adjustment.id, "amount": amount_text(amount)},
        consumer_id=statement.party_id if statement.party_type == CONSUMER else None,
    )
    outbox.add(session, aggregate_id=statement.party_id, event_type="statement_adjusted", data=data)
    return adjustment
