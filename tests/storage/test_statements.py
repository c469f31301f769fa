"""Statements on both backends: totals to the cent against the raw rows, issued once, never changed."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from core.errors import NotFoundError, SpecValidationError
from core.plans import Plan
from storage.database import session_scope
from storage.models import AuditLog, OutboxEvent, Statement, StatementLine
from storage.repositories import consumers, service_subscriptions, services, statements
from storage.repositories.services import Actor
from storage.repositories.statements import CONSUMER, PROVIDER, Party
from tests.support.billing import store_rows, usage_row
from tests.support.consumption import live_service

PERIOD = "2026-11"
START = datetime(2026, 11, 1, tzinfo=UTC)
ADMIN = Actor("root", "admin", "127.0.0.1", "pytest")


def random_cost(rng: random.Random) -> Decimal:
    """Costs with all twelve decimal places in use: a float would lose cents over a few thousand rows."""
    return Decimal(rng.randrange(0, 10**10)) / Decimal(10**12) + Decimal(rng.randrange(0, 3))


def month_of_usage() -> dict[str, str]:
    """Two consumers calling three services of two providers in November, plus calls on both sides of it."""
    rng = random.Random(15)
    ids = {
        "a1": live_service("alpha-chat"),
        "a2": live_service("alpha-embed"),
        "b1": live_service("beta-chat", provider="beta"),
    }
    rows = []
    for n in range(600):
        consumer = "alice" if n % 3 else "bob"
        service = ids[("a1", "a2", "b1")[n % 3 if consumer == "alice" else n % 2]]
        at = START + timedelta(seconds=n * 4000 % (30 * 86400))
        rows.append(usage_row(consumer, service, at, random_cost(rng)))
    rows.append(usage_row("alice", ids["a1"], START - timedelta(microseconds=1), "5"))  # October's last instant
    rows.append(usage_row("alice", ids["a1"], datetime(2026, 12, 1, tzinfo=UTC), "7"))  # December's first
    rows.append(usage_row("alice", ids["a1"], START + timedelta(days=3), "0", status=502))  # a failed call
    with session_scope() as session:
        store_rows(session, rows)
    return ids


def raw_sum(where: str, params: dict[str, object]) -> Decimal:
    """The month's costs read straight from usage_records, summed as Decimals here."""
    query = text(f"SELECT cost FROM usage_records WHERE occurred_at >= :start AND occurred_at < :end AND {where}")
    with session_scope() as session:
        costs = session.execute(query, {"start": START, "end": datetime(2026, 12, 1, tzinfo=UTC), **params}).scalars()
        return sum((Decimal(str(c)) for c in costs), Decimal(0))


def issue_all(period: str = PERIOD) -> list[Statement]:
    with session_scope() as session:
        issued = []
        for party in statements.parties(session, period):
            issued += statements.issue(session, party, period, Decimal("12.5"), "run-1")
        return issued


def test_totals_equal_the_raw_rows_to_the_cent(database_url: str) -> None:
    ids = month_of_usage()
    issued = issue_all()
    assert sorted((s.party_type, s.party_id) for s in issued) == [
        (CONSUMER, "alice"), (CONSUMER, "bob"), (PROVIDER, "acme"), (PROVIDER, "beta"),
    ]  # fmt: skip
    with session_scope() as session:
        alice = statements.find(session, Party(CONSUMER, "alice"), PERIOD, "USD")
        acme = statements.find(session, Party(PROVIDER, "acme"), PERIOD, "USD")
        assert alice is not None and acme is not None
        lines = statements.lines_for(session, [alice.id, acme.id])

    owed = raw_sum("consumer_id = :c", {"c": "alice"})
    assert alice.gross == owed, "exact, all twelve places"
    assert alice.total == owed.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert (alice.fee, alice.net, alice.fee_percent) == (0, owed, 0)
    assert {line.service_id for line in lines[alice.id]} == set(ids.values())
    for line in lines[alice.id]:
        assert line.gross == raw_sum("consumer_id = :c AND service_id = :s", {"c": "alice", "s": line.service_id})
    assert alice.requests == sum(line.requests for line in lines[alice.id]) == 400 + 1  # the failed call is listed

    earned = raw_sum("service_id IN (:a, :b)", {"a": ids["a1"], "b": ids["a2"]})
    assert acme.gross == earned
    assert acme.fee == sum((line.fee for line in lines[acme.id]), Decimal(0))
    assert abs(acme.fee - earned * Decimal("0.125")) < Decimal("1e-11")
    assert acme.net == acme.gross - acme.fee
    assert acme.total == acme.net.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert {line.service_name for line in lines[acme.id]} == {"alpha-chat", "alpha-embed"}


def paid_plan(consumer: str, service_id: str, price: str, active_from: datetime, ended: datetime | None) -> None:
    """A subscription under a plan with a monthly price, active from `active_from` until `ended`."""
    plan = Plan(name="pro", requests_per_minute=600, price_per_month=Decimal(price))
    with session_scope() as session:
        consumers.ensure(session, consumer, ADMIN)
        service = services.get(session, service_id)
        subscription = service_subscriptions.subscribe(session, consumer, service, plan, None, ADMIN, pending=False)
        subscription.activated_at = active_from
        if ended is not None:
            subscription.status, subscription.ended_at = service_subscriptions.CANCELLED, ended


def test_plan_prices_are_billed_for_the_share_of_the_month_they_were_active(database_url: str) -> None:
    ids = month_of_usage()
    mid_month = START + timedelta(days=15)  # November has 30 days: half of it is left
    paid_plan("alice", ids["a1"], "30.00", mid_month, None)  # half of 30.00
    paid_plan("carol", ids["b1"], "9.99", START - timedelta(days=40), None)  # the whole month, and no calls at all
    paid_plan("dave", ids["a2"], "100", START - timedelta(days=3), START + timedelta(days=3))  # a tenth
    paid_plan("erin", ids["a2"], "100", START - timedelta(days=9), START)  # ended as November began: nothing
    issued = issue_all()
    assert sorted(s.party_id for s in issued if s.party_type == CONSUMER) == ["alice", "bob", "carol", "dave"]
    with session_scope() as session:
        found = {p: statements.find(session, Party(CONSUMER, p), PERIOD, "USD") for p in ("alice", "carol", "dave")}
        acme = statements.find(session, Party(PROVIDER, "acme"), PERIOD, "USD")
        assert acme is not None and all(found.values())
        lines = statements.lines_for(session, [s.id for s in found.values() if s] + [acme.id])
    alice, carol, dave = found["alice"], found["carol"], found["dave"]
    assert alice is not None and carol is not None and dave is not None

    owed = raw_sum("consumer_id = :c", {"c": "alice"})
    assert alice.plan_fees == Decimal("15") and alice.gross == owed + 15
    assert alice.total == (owed + 15).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    a1 = next(line for line in lines[alice.id] if line.service_id == ids["a1"])
    assert a1.plan_fees == 15
    assert a1.gross == raw_sum("consumer_id = :c AND service_id = :s", {"c": "alice", "s": ids["a1"]}) + 15
    assert (carol.gross, carol.total, carol.requests) == (Decimal("9.99"), Decimal("9.99"), 0)
    assert [(line.service_id, line.plan_fees) for line in lines[carol.id]] == [(ids["b1"], Decimal("9.99"))]
    assert (dave.plan_fees, dave.total) == (Decimal("10"), Decimal("10.00"))

    earned = raw_sum("service_id IN (:a, :b)", {"a": ids["a1"], "b": ids["a2"]})
    assert acme.plan_fees == 25, "alice's half and dave's tenth go to the provider"
    assert acme.gross == earned + 25
    assert abs(acme.fee - (earned + 25) * Decimal("0.125")) < Decimal("1e-11")
    assert acme.net == acme.gross - acme.fee


def test_a_rerun_issues_nothing_twice_and_the_event_is_in_the_outbox(database_url: str) -> None:
    month_of_usage()
    first = issue_all()
    assert len(first) == 4
    assert issue_all() == []
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Statement)) == 4
        events = session.scalars(select(OutboxEvent).where(OutboxEvent.event_type == "statement_issued")).all()
        assert sorted(e.aggregate_id for e in events) == ["acme", "alice", "beta", "bob"]
        alice = next(e for e in events if e.aggregate_id == "alice")
        assert alice.payload["data"]["partyType"] == CONSUMER and alice.payload["data"]["period"] == PERIOD
        assert session.scalar(select(func.count()).where(AuditLog.action == "statement_issued")) == 4
    assert issue_all("2026-10") and issue_all("2026-10") == [], "October's one call makes its own statements, once"


def test_two_runs_at_once_issue_each_statement_once(database_url: str) -> None:
    month_of_usage()
    results: list[list[Statement]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        try:
            barrier.wait()
            results.append(issue_all())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if errors and "database is locked" in str(errors[0]):
        pytest.fail(f"SQLite refused the second writer instead of waiting: {errors[0]}")
    assert not errors, errors
    assert sum(len(r) for r in results) == 4
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Statement)) == 4
        assert session.scalar(select(func.count()).where(OutboxEvent.event_type == "statement_issued")) == 4


def test_an_issued_statement_cannot_be_changed_or_deleted(database_url: str) -> None:
    month_of_usage()
    statement_id = issue_all()[0].id
    for sql in (
        "UPDATE statements SET total = 0 WHERE id = :id",
        "DELETE FROM statements WHERE id = :id",
        "UPDATE statement_lines SET gross = '0' WHERE statement_id = :id",
        "DELETE FROM statement_lines WHERE statement_id = :id",
    ):
        with pytest.raises(DBAPIError, match="append-only"), session_scope() as session:
            session.execute(text(sql), {"id": statement_id})
    with session_scope() as session:
        assert session.scalar(select(func.count()).where(StatementLine.statement_id == statement_id)) > 0


def test_a_correction_is_a_separate_audited_entry(database_url: str) -> None:
    month_of_usage()
    issue_all()
    with session_scope() as session:
        alice = statements.find(session, Party(CONSUMER, "alice"), PERIOD, "USD")
        assert alice is not None
        before = (alice.gross, alice.total)
        adjustment = statements.adjust(session, alice.id, Decimal("-1.25"), "refund for an outage", ADMIN)
    with session_scope() as session:
        again = statements.get(session, alice.id)
        assert (again.gross, again.total) == before, "the statement itself is unchanged"
        (stored,) = statements.adjustments_for(session, [alice.id])[alice.id]
        assert (stored.id, stored.amount, stored.created_by) == (adjustment.id, Decimal("-1.25"), "root")
        record = session.scalars(select(AuditLog).where(AuditLog.action == "statement_adjusted")).one()
        assert (record.consumer_id, record.reason, record.actor_ip) == ("alice", "refund for an outage", "127.0.0.1")
        event = session.scalars(select(OutboxEvent).where(OutboxEvent.event_type == "statement_adjusted")).one()
        assert event.payload["data"]["amount"] == "-1.25"
        with pytest.raises(SpecValidationError):
            statements.adjust(session, alice.id, Decimal(0), "nothing", ADMIN)
        with pytest.raises(NotFoundError):
            statements.adjust(session, "no-such-statement", Decimal(1), "x", ADMIN)
