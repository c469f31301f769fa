"""Aggregates the metrics endpoint reads: what the publish runs recorded, counted in the database.

Flow runs execute in worker processes, so the API cannot count their outcomes in memory; it
counts the rows they wrote instead. Every query is one GROUP BY (no rows leave the database),
grouped label values are capped, and on PostgreSQL the whole read runs in one read-only
transaction with a statement timeout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, extract, func, literal_column, or_, select, text, true
from sqlalchemy.orm import Session

from storage.models import OutboxEvent, Service, ServiceVersion, ValidationResult, WebhookAttempt
from storage.repositories import run_requests

VALIDATION_PHASES = ("metadata_validation", "openapi_validation")
POLICY_PHASE = "policy_compliance"
OVERFLOW_LABEL = "other"  # label value of everything past the cap of distinct values
MAX_LABEL_LENGTH = 64
Rows = Select[tuple[Any, ...]]  # a SELECT of any columns


@dataclass
class Histogram:
    """Cumulative counts per upper bound (same order as the bounds), total count and sum."""

    buckets: list[int]
    count: int = 0
    total: float = 0.0

    def add(self, other: Histogram) -> None:
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.count += other.count
        self.total += other.total


@dataclass
class PublishingSnapshot:
    """Everything the metrics endpoint reports from the database, read in one go."""

    versions_by_status: dict[str, int] = field(default_factory=dict)
    published: int = 0
    publish_duration: Histogram = field(default_factory=lambda: Histogram([]))
    phases: dict[tuple[str, str], Histogram] = field(default_factory=dict)
    validation_errors: dict[tuple[str, str], int] = field(default_factory=dict)
    policy_violations: dict[tuple[str, str], int] = field(default_factory=dict)
    integration_failures: dict[str, int] = field(default_factory=dict)
    services_by_status: dict[str, int] = field(default_factory=dict)
    outbox_by_status: dict[str, int] = field(default_factory=dict)
    run_starts: run_requests.Backlog = field(default_factory=lambda: run_requests.Backlog(0, None))


@dataclass(frozen=True)
class SnapshotLimits:
    phase_buckets: Sequence[float]  # seconds
    publish_buckets: Sequence[float]  # seconds
    max_label_values: int = 100
    statement_timeout_ms: int = 5000


def snapshot(session: Session, limits: SnapshotLimits) -> PublishingSnapshot:
    """Read every aggregate; call first thing in a fresh session (it sets the transaction up)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        session.execute(text("SET TRANSACTION READ ONLY"))
        session.execute(select(func.set_config("statement_timeout", str(limits.statement_timeout_ms), True)))
    snap = PublishingSnapshot()
    _versions(session, snap, limits, postgres)
    _phases(session, snap, limits)
    _issues(session, snap, limits, postgres)
    snap.services_by_status = _counts(session, select(Service.status, func.count()).group_by(Service.status))
    outbox = select(OutboxEvent.status, func.count()).group_by(OutboxEvent.status)
    snap.outbox_by_status = _counts(session, outbox)
    snap.run_starts = run_requests.backlog(session)
    failed_phase = ("endpoint_tests", "failed")
    snap.integration_failures.update(
        provider_endpoint=snap.phases[failed_phase].count if failed_phase in snap.phases else 0,
        kafka=snap.outbox_by_status.get("dead", 0),
        webhook=_failed_webhook_attempts(session),
    )
    return snap


def _versions(session: Session, snap: PublishingSnapshot, limits: SnapshotLimits, postgres: bool) -> None:
    v = ServiceVersion
    failed = v.status == "failed"
    registry = and_(failed, v.failure_phase == "registry_sync")
    # A policy phase that failed with an exception (not with violations) could not reach the engine.
    engine = and_(failed, v.failure_phase == POLICY_PHASE, v.failure_reason.like("pipeline error:%"))
    rows = session.execute(
        select(v.status, func.count(), func.count(v.published_at), _sum_if(registry), _sum_if(engine)).group_by(
            v.status
        )
    ).all()
    snap.versions_by_status = {status: int(n) for status, n, *_ in rows}
    snap.published = sum(int(r[2]) for r in rows)
    snap.integration_failures["registry"] = sum(int(r[3] or 0) for r in rows)
    snap.integration_failures["policy_engine"] = sum(int(r[4] or 0) for r in rows)
    if postgres:
        seconds: ColumnElement[Any] = extract("epoch", v.published_at - v.created_at)
    else:
        seconds = (func.julianday(v.published_at) - func.julianday(v.created_at)) * 86400.0
    query = _histogram_select(seconds, limits.publish_buckets).where(v.published_at.is_not(None))
    snap.publish_duration = _histogram(session.execute(query).one(), len(limits.publish_buckets))


def _phases(session: Session, snap: PublishingSnapshot, limits: SnapshotLimits) -> None:
    r = ValidationResult
    query = _histogram_select(r.duration_ms / 1000.0, limits.phase_buckets, r.phase, r.outcome)
    for phase, outcome, *values in session.execute(query.group_by(r.phase, r.outcome)).all():
        snap.phases[(phase, outcome)] = _histogram(values, len(limits.phase_buckets))


def _issues(session: Session, snap: PublishingSnapshot, limits: SnapshotLimits, postgres: bool) -> None:
    r = ValidationResult
    validation = and_(r.phase.in_(VALIDATION_PHASES), r.outcome == "failed")
    snap.validation_errors = _issue_counts(session, r.errors, validation, ("phase", "code"), limits, postgres)
    for column in (r.errors, r.warnings):  # blocking and non-blocking violations alike
        found = _issue_counts(session, column, r.phase == POLICY_PHASE, ("code", "severity"), limits, postgres)
        for key, count in found.items():
            snap.policy_violations[key] = snap.policy_violations.get(key, 0) + count


def _issue_counts(
    session: Session,
    column: Any,
    where: ColumnElement[bool],
    keys: tuple[str, str],
    limits: SnapshotLimits,
    postgres: bool,
) -> dict[tuple[str, str], int]:
    """Issues (elements of a JSON list column) counted by two keys; `phase` is the row's phase."""
    if postgres:
        issue = func.json_array_elements(column).table_valued("value")
    else:
        issue = func.json_each(column).table_valued("value")
    labels = [ValidationResult.phase if k == "phase" else _issue_field(issue.c.value, k, postgres) for k in keys]
    count = func.count()
    query = (
        select(*labels, count)
        .select_from(ValidationResult)
        .join(issue, true())
        .where(where)
        .group_by(*labels)
        .order_by(count.desc())
        .limit(limits.max_label_values + 1)
    )
    rows = session.execute(query).all()
    return _capped({(_label(row[0]), _label(row[1])): int(row[2]) for row in rows}, limits)


def _issue_field(issue: ColumnElement[Any], key: str, postgres: bool) -> ColumnElement[Any]:
    """One key of a JSON issue object, as text. The key is ours and written into the SQL as a
    constant, so the select list and the GROUP BY read the same expression."""
    if postgres:
        return issue.op("->>")(literal_column(f"'{key}'"))
    return func.json_extract(issue, literal_column(f"'$.{key}'"))


def _failed_webhook_attempts(session: Session) -> int:
    a = WebhookAttempt
    ok = and_(a.error.is_(None), a.status_code >= 200, a.status_code < 300)
    return int(session.scalar(select(func.count()).select_from(a).where(or_(a.status_code.is_(None), ~ok))) or 0)


def _counts(session: Session, query: Select[tuple[str, int]]) -> dict[str, int]:
    return {_label(status): int(n) for status, n in session.execute(query).all()}


def _sum_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.sum(case((condition, 1), else_=0))


def _histogram_select(value: ColumnElement[Any], bounds: Sequence[float], *groups: Any) -> Rows:
    """count(*), sum(value) and one cumulative count per bound, after the group columns."""
    per_bucket = [_sum_if(value <= bound) for bound in bounds]
    return select(*groups, func.count(), func.coalesce(func.sum(value), 0.0), *per_bucket)


def _histogram(values: Sequence[Any], n_bounds: int) -> Histogram:
    count, total, *buckets = values
    return Histogram([int(b or 0) for b in buckets[:n_bounds]], int(count or 0), float(total or 0.0))


def _label(value: Any) -> str:
    return str(value if value is not None else "unknown")[:MAX_LABEL_LENGTH]


def _capped(counts: dict[tuple[str, str], int], limits: SnapshotLimits) -> dict[tuple[str, str], int]:
    """At most `max_label_values` label pairs; the rest (rarest first to go) are summed as 'other'."""
    if len(counts) <= limits.max_label_values:
        return counts
    ranked = sorted(counts.items(), key=lambda item: item[1], reverse=True)
    kept = dict(ranked[: limits.max_label_values - 1])
    overflow = (OVERFLOW_LABEL, OVERFLOW_LABEL)
    kept[overflow] = kept.get(overflow, 0) + sum(n for _, n in ranked[limits.max_label_values - 1 :])
    return kept
