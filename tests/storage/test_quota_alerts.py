"""Quota alerts as the usage writer raises them, on both backends: 80 % and 100 %, once per month, reset
the month after; counted like the gateway counts (successful calls), a record handed off twice once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from gateway.writer import store
from storage.database import get_engine, session_scope
from storage.models import FlowRunRequest, OutboxEvent, QuotaAlert, QuotaUsage
from storage.repositories import quotas
from tests.support.billing import call, subscribed
from tests.support.consumption import live_service

NOW = datetime.now(UTC)
NEXT_MONTH = datetime(NOW.year + NOW.month // 12, NOW.month % 12 + 1, 1, 0, 0, 1, tzinfo=UTC)


def alerts() -> list[tuple[str, str, int, int]]:
    with session_scope() as session:
        rows = session.scalars(select(QuotaAlert).order_by(QuotaAlert.period, QuotaAlert.metric, QuotaAlert.threshold))
        return [(a.period, a.metric, a.threshold, a.used) for a in rows]


def owed_runs() -> list[str]:
    with session_scope() as session:
        rows = session.scalars(select(FlowRunRequest).where(FlowRunRequest.kind == "quota-alert"))
        return sorted(r.parameters["alert_id"] for r in rows)


def test_alerts_at_80_and_100_percent_once_per_month_and_again_next_month(database_url: str) -> None:
    service_id = live_service()
    sub = subscribed("carol", service_id, requests_per_month=10, tokens_per_month=1000)
    engine = get_engine()
    period = quotas.period_of(NOW)

    store(engine, [call(n, sub, service_id, NOW) for n in range(7)])
    assert alerts() == []
    store(engine, [call(n, sub, service_id, NOW, status=502) for n in range(100, 110)])
    assert alerts() == [], "failed calls give their quota back: they do not count"
    store(engine, [call(7, sub, service_id, NOW)])
    assert alerts() == [(period, "requests", 80, 8)]
    store(engine, [call(n, sub, service_id, NOW) for n in range(8)])  # handed off again (a replayed journal)
    assert alerts() == [(period, "requests", 80, 8)], "a record stored twice counts once"
    store(engine, [call(8, sub, service_id, NOW), call(9, sub, service_id, NOW, tokens=710)])
    assert alerts() == [(period, "requests", 80, 8), (period, "requests", 100, 10), (period, "tokens", 80, 800)]
    store(engine, [call(n, sub, service_id, NOW) for n in range(10, 40)])
    assert len(alerts()) == 4 and alerts()[-1] == (period, "tokens", 100, 1100), "100 % of tokens, then nothing more"

    # the next month starts from zero: the same thresholds alert again, once
    store(engine, [call(n, sub, service_id, NEXT_MONTH) for n in range(8)])
    store(engine, [call(n, sub, service_id, NEXT_MONTH + timedelta(days=1)) for n in range(8, 12)])
    later = quotas.period_of(NEXT_MONTH)
    assert [a for a in alerts() if a[0] == later] == [(later, "requests", 80, 8), (later, "requests", 100, 12)]
    with session_scope() as session:
        counters = {c.period: (c.requests, c.tokens) for c in session.scalars(select(QuotaUsage))}
        assert counters == {period: (40, 1100), later: (12, 120)}
        events = session.scalars(select(OutboxEvent).where(OutboxEvent.event_type == "quota_threshold_reached")).all()
        alert_ids = sorted(a.id for a in session.scalars(select(QuotaAlert)))
    assert sorted(e.payload["data"]["alertId"] for e in events) == alert_ids, "one Kafka event per alert"
    assert all(e.aggregate_id == "carol" for e in events)
    assert owed_runs() == alert_ids, "one owed send-quota-alerts run per alert"


def test_a_month_already_over_is_counted_but_raises_no_alert(database_url: str) -> None:
    service_id = live_service()
    sub = subscribed("carol", service_id, requests_per_month=2, tokens_per_month=None)
    last_month = datetime(NOW.year, NOW.month, 1, tzinfo=UTC) - timedelta(days=2)
    store(get_engine(), [call(n, sub, service_id, last_month) for n in range(3)])
    assert alerts() == []
    with session_scope() as session:
        assert session.get(QuotaUsage, (sub, quotas.period_of(last_month))) is not None


def test_writers_storing_at_once_alert_once(database_url: str) -> None:
    service_id = live_service()
    sub = subscribed("carol", service_id, requests_per_month=40, tokens_per_month=None)
    engine = get_engine()
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def writer(first: int) -> None:
        try:
            barrier.wait()
            for n in range(first, first + 10):
                store(engine, [call(n, sub, service_id, NOW)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k * 10,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    period = quotas.period_of(NOW)
    assert alerts() == [(period, "requests", 80, 32), (period, "requests", 100, 40)]
