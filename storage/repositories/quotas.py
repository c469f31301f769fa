"""Monthly quota counters per subscription, and the alerts when a threshold of a quota is reached.

The usage writer calls `count_usage` in the transaction that stores a batch of usage records, with
the records that batch really added (a record handed off twice is counted once, because only the
insert that stored it returns it). The counters move with the rows, so they never drift from them,
and a threshold crossed by a batch is seen by exactly that batch: the counter before and after it
are both known. The alert row's unique (subscription, period, metric, threshold) constraint is the
guarantee on top: whatever runs twice, a consumer is told once per month and threshold.

What counts is what the gateway's quota counts (gateway/proxy.py `record`): a successful call is
one request and its input plus output tokens; a failed one gives its reservation back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.models import QuotaAlert, QuotaUsage, ServiceSubscription, new_id
from storage.repositories import outbox

REQUESTS, TOKENS = "requests", "tokens"


def period_of(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


def counts_toward_quota(row: dict[str, Any]) -> bool:
    return 200 <= int(row["status"]) < 300 and row.get("error") is None


def deltas_of(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, int]]:
    """(subscription id, period) -> (requests, tokens) the rows add to its quota."""
    found: dict[tuple[str, str], tuple[int, int]] = {}
    for row in rows:
        if row.get("subscription_id") is None or not counts_toward_quota(row):
            continue
        key = (row["subscription_id"], period_of(row["occurred_at"]))
        requests, tokens = found.get(key, (0, 0))
        found[key] = (requests + 1, tokens + int(row["input_tokens"]) + int(row["output_tokens"]))
    return found


@dataclass(frozen=True)
class Crossing:
    subscription_id: str
    period: str
    metric: str
    threshold: int
    used: int
    quota: int


def count_usage(
    session: Session, rows: Sequence[dict[str, Any]], thresholds: Sequence[int], now: datetime | None = None
) -> list[QuotaAlert]:
    """Add the stored rows to their subscriptions' counters; returns the alerts this made (new rows,
    each with its `quota_threshold_reached` event in the outbox). Months already over get counted but
    raise no alert: a late record is no news to act on."""
    limits = _limits(session, {subscription_id for subscription_id, _ in deltas_of(rows)})
    # subscriptions without a quota have nothing to alert about: no counter to keep for them
    deltas = {key: delta for key, delta in deltas_of(rows).items() if key[0] in limits}
    if not deltas:
        return []
    current = period_of(now or datetime.now(UTC))
    crossings: list[Crossing] = []
    for (subscription_id, period), after in _add_all(session, deltas).items():
        if period < current:
            continue
        requests, tokens = deltas[(subscription_id, period)]
        quotas = limits[subscription_id]
        for metric, used, added, quota in (
            (REQUESTS, after[0], requests, quotas[0]),
            (TOKENS, after[1], tokens, quotas[1]),
        ):
            for threshold in _crossed(used - added, used, quota, thresholds):
                crossings.append(Crossing(subscription_id, period, metric, threshold, used, quota or 0))
    return [alert for c in crossings if (alert := _alert(session, c, limits[c.subscription_id][2:])) is not None]


def _crossed(before: int, after: int, quota: int | None, thresholds: Sequence[int]) -> list[int]:
    """The thresholds (percent of `quota`) that `before` had not reached and `after` has."""
    if not quota or quota <= 0:
        return []
    return [t for t in thresholds if before * 100 < quota * t <= after * 100]


def _limits(session: Session, subscription_ids: set[str]) -> dict[str, tuple[int | None, int | None, str, str]]:
    """subscription id -> (requests per month, tokens per month, consumer id, service id), for those
    with a quota."""
    query = select(
        ServiceSubscription.id,
        ServiceSubscription.requests_per_month,
        ServiceSubscription.tokens_per_month,
        ServiceSubscription.consumer_id,
        ServiceSubscription.service_id,
    ).where(
        ServiceSubscription.id.in_(subscription_ids),
        (ServiceSubscription.requests_per_month.is_not(None)) | (ServiceSubscription.tokens_per_month.is_not(None)),
    )
    return {row[0]: (row[1], row[2], row[3], row[4]) for row in session.execute(query)}


def _add_all(
    session: Session, deltas: dict[tuple[str, str], tuple[int, int]]
) -> dict[tuple[str, str], tuple[int, int]]:
    """Increment the counters (created at zero if new) in one statement; their values after it.

    Rows in key order: two writers updating the same counters lock them in the same order, so they
    wait for each other instead of deadlocking."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table: Any = QuotaUsage.__table__
    values = [
        {"subscription_id": s, "period": p, "requests": requests, "tokens": tokens}
        for (s, p), (requests, tokens) in sorted(deltas.items())
    ]
    statement = insert(table).values(values)
    upsert = statement.on_conflict_do_update(
        index_elements=["subscription_id", "period"],
        set_={
            "requests": table.c.requests + statement.excluded.requests,
            "tokens": table.c.tokens + statement.excluded.tokens,
        },
    ).returning(table.c.subscription_id, table.c.period, table.c.requests, table.c.tokens)
    return {(row[0], row[1]): (int(row[2]), int(row[3])) for row in session.execute(upsert)}


def _alert(session: Session, crossing: Crossing, who: tuple[Any, ...]) -> QuotaAlert | None:
    """Insert the alert unless it exists (the unique constraint decides), with its outbox event."""
    consumer_id, service_id = who
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table: Any = QuotaAlert.__table__
    values = {
        "id": new_id(),
        "subscription_id": crossing.subscription_id,
        "consumer_id": consumer_id,
        "service_id": service_id,
        "period": crossing.period,
        "metric": crossing.metric,
        "threshold": crossing.threshold,
        "used": crossing.used,
        "quota": crossing.quota,
        "reached_at": datetime.now(UTC),
    }
    inserted = session.execute(insert(table).values(**values).on_conflict_do_nothing().returning(table.c.id)).first()
    if inserted is None:
        return None
    outbox.add(session, aggregate_id=consumer_id, event_type="quota_threshold_reached", data=event_data(values))
    return session.get(QuotaAlert, inserted[0])


def event_data(alert: dict[str, Any]) -> dict[str, Any]:
    """The `data` of a quota alert, on Kafka and in the consumer's webhook."""
    return {
        "alertId": alert["id"],
        "consumerId": alert["consumer_id"],
        "serviceId": alert["service_id"],
        "subscriptionId": alert["subscription_id"],
        "period": alert["period"],
        "metric": alert["metric"],
        "threshold": alert["threshold"],
        "used": alert["used"],
        "quota": alert["quota"],
    }


def alert_data(alert: QuotaAlert) -> dict[str, Any]:
    return event_data({c: getattr(alert, c) for c in ("id", "consumer_id", "service_id", "subscription_id",
                                                       "period", "metric", "threshold", "used", "quota")})  # fmt: skip


def get_alert(session: Session, alert_id: str) -> QuotaAlert | None:
    return session.get(QuotaAlert, alert_id)


def unnotified(session: Session, limit: int = 500) -> Sequence[QuotaAlert]:
    """Alerts whose consumer has not been told yet, oldest first."""
    query = select(QuotaAlert).where(QuotaAlert.notified_at.is_(None))
    return session.scalars(query.order_by(QuotaAlert.reached_at, QuotaAlert.id).limit(limit)).all()


def mark_notified(session: Session, alert_id: str, webhook_event_id: str) -> None:
    session.execute(
        update(QuotaAlert)
        .where(QuotaAlert.id == alert_id, QuotaAlert.notified_at.is_(None))
        .values(notified_at=datetime.now(UTC), webhook_event_id=webhook_event_id)
    )


def for_consumer(session: Session, consumer_id: str, period: str | None = None) -> Sequence[QuotaAlert]:
    """A consumer's alerts (of one month, if given), oldest first."""
    query = select(QuotaAlert).where(QuotaAlert.consumer_id == consumer_id)
    if period is not None:
        query = query.where(QuotaAlert.period == period)
    return session.scalars(query.order_by(QuotaAlert.reached_at, QuotaAlert.id)).all()
