"""Tables of the marketplace database."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import text as sql_text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend: SQLite hands back naive datetimes, PostgreSQL
    the session's zone; both become UTC so callers (HTTP dates, comparisons) get one zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """Exact decimal amounts: NUMERIC on PostgreSQL; on SQLite, which has no decimal type and would
    keep a float, the amount's text."""

    impl = Numeric(24, 12)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        return dialect.type_descriptor(String(48) if dialect.name == "sqlite" else Numeric(24, 12))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(str(value))


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime()}


class Service(Base):
    """A published (or publishing) service and where it is in its lifecycle."""

    __tablename__ = "services"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text)
    provider_id: Mapped[str] = mapped_column(String(128), index=True)
    provider_name: Mapped[str] = mapped_column(String(256))
    category: Mapped[str] = mapped_column(String(64), index=True)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    spec: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(32), index=True)
    current_phase: Mapped[str | None] = mapped_column(String(64))
    failure_phase: Mapped[str | None] = mapped_column(String(64))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    registry_id: Mapped[str | None] = mapped_column(String(128), index=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(36), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    published_at: Mapped[datetime | None] = mapped_column()
    deprecated_at: Mapped[datetime | None] = mapped_column()
    sunset_at: Mapped[datetime | None] = mapped_column()
    retirement_flow_run_id: Mapped[str | None] = mapped_column(String(36))
    archived_at: Mapped[datetime | None] = mapped_column()


class ServiceVersion(Base):
    """Every version ever submitted, with its own pass through the pipeline.

    name+version is unique across the marketplace. The first version moves the service's
    status with it; a later version goes through the pipeline while the service stays live
    on the current one, and replaces it when it becomes active.
    """

    __tablename__ = "service_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_service_versions_name_version"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    service_id: Mapped[str] = mapped_column(ForeignKey("services.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(32), index=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(36), index=True)
    current_phase: Mapped[str | None] = mapped_column(String(64))
    failure_phase: Mapped[str | None] = mapped_column(String(64))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    registry_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(default=utcnow, onupdate=utcnow)
    published_at: Mapped[datetime | None] = mapped_column()


class Approval(Base):
    """A governance decision a version waits for."""

    __tablename__ = "approvals"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    service_id: Mapped[str] = mapped_column(ForeignKey("services.id"), index=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("service_versions.id"), unique=True)
    flow_run_id: Mapped[str] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending, approved, rejected, expired
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    decided_at: Mapped[datetime | None] = mapped_column()
    reviewer: Mapped[str | None] = mapped_column(String(128))
    comment: Mapped[str | None] = mapped_column(Text)


class ServiceArchive(Base):
    """What a retired service looked like, kept after it leaves the marketplace."""

    __tablename__ = "service_archives"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(ForeignKey("services.id"), unique=True)
    archived_at: Mapped[datetime] = mapped_column(default=utcnow)
    record: Mapped[dict[str, Any]] = mapped_column()


class ValidationResult(Base):
    """The outcome of one phase (or one check of a phase) of one publish run."""

    __tablename__ = "validation_results"
    __table_args__ = (Index("ix_validation_results_service_run", "service_id", "flow_run_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(ForeignKey("services.id"))
    flow_run_id: Mapped[str | None] = mapped_column(String(36))
    phase: Mapped[str] = mapped_column(String(64))
    check_name: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    errors: Mapped[list[Any]] = mapped_column(default=list)
    warnings: Mapped[list[Any]] = mapped_column(default=list)
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime] = mapped_column()
    duration_ms: Mapped[float] = mapped_column(Float)


class AuditLog(Base):
    """Append-only trail of every transition and decision (the database refuses UPDATE/DELETE)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    service_id: Mapped[str | None] = mapped_column(String(36), index=True)
    action: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(128))
    actor_role: Mapped[str | None] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    flow_run_id: Mapped[str | None] = mapped_column(String(36))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    actor_ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    consumer_id: Mapped[str | None] = mapped_column(String(128), index=True)  # consumption records: whose


class IdempotencyKey(Base):
    """A POST's Idempotency-Key with the response it got, replayed when the client retries."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("principal", "key", name="uq_idempotency_keys_principal_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    principal: Mapped[str] = mapped_column(String(160))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    response_body: Mapped[str | None] = mapped_column(Text)


class OutboxEvent(Base):
    """An event waiting to be relayed; written in the transaction of the change it reports."""

    __tablename__ = "outbox_events"
    __table_args__ = (Index("ix_outbox_events_pending", "status", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True, default=new_id)
    aggregate_id: Mapped[str] = mapped_column(String(128), index=True)  # a service id, or a consumer id
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column()
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    dead_at: Mapped[datetime | None] = mapped_column()


class WebhookDelivery(Base):
    """One event to send to one URL; its attempts are recorded in webhook_attempts."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("event_id", "url", name="uq_webhook_deliveries_event_url"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    event_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(64))
    service_id: Mapped[str | None] = mapped_column(String(36), index=True)
    audience: Mapped[str] = mapped_column(String(16))  # governance | consumers
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column()


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float)


class Subscription(Base):
    """A consumer's callback for news about a service (deprecation, retirement).

    Not access to the service: that is a ServiceSubscription (a plan the consumer may call under).
    """

    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("service_id", "callback_url", name="uq_subscriptions_service_url"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    service_id: Mapped[str] = mapped_column(ForeignKey("services.id"), index=True)
    consumer_id: Mapped[str] = mapped_column(String(128))
    callback_url: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CacheStamp(Base):
    """A counter bumped by every transaction that changes a service (in-process cache validity)."""

    __tablename__ = "cache_stamps"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class SearchDocument(Base):
    """What discovery searches: one row per listed service (full-text index kept by the database)."""

    __tablename__ = "search_documents"

    service_id: Mapped[str] = mapped_column(ForeignKey("services.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text)
    tags_text: Mapped[str] = mapped_column(Text)
    tags: Mapped[list[Any]] = mapped_column()
    category: Mapped[str] = mapped_column(String(64), index=True)
    pricing_model: Mapped[str | None] = mapped_column(String(32), index=True)
    compliance_level: Mapped[str | None] = mapped_column(String(32), index=True)
    provider_id: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    version: Mapped[str] = mapped_column(String(64))
    published_at: Mapped[datetime | None] = mapped_column()
    indexed_at: Mapped[datetime] = mapped_column(default=utcnow)
    document: Mapped[dict[str, Any]] = mapped_column()


class ServiceSignal(Base):
    """What is known about a service's use and health (storage/repositories/service_signals.py).

    One row per service that has any: `calls_30d` is refreshed from the usage records; the
    observed availability (percent) and latency come from the provider-health flow. Search ranks,
    filters and buckets by them; a service without a row has none of them (NULL, 0 calls).
    """

    __tablename__ = "service_signals"

    service_id: Mapped[str] = mapped_column(ForeignKey("services.id"), primary_key=True)
    calls_30d: Mapped[int] = mapped_column(Integer, default=0, server_default="0", index=True)
    availability: Mapped[float | None] = mapped_column(Float, index=True)
    latency_p50_ms: Mapped[float | None] = mapped_column(Float)
    latency_p95_ms: Mapped[float | None] = mapped_column(Float, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsageRecord(Base):
    """One call through the gateway (written by the usage writer, never by the hot path).

    On PostgreSQL the table is partitioned by month on `occurred_at` (storage/repositories/usage.py
    creates the partitions); (request_id, occurred_at) is the row's identity, so a record handed
    off twice (a retried batch, a replayed journal) is stored once.
    """

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_consumer", "consumer_id", "occurred_at"),
        Index("ix_usage_records_service", "service_id", "occurred_at"),
    )

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(primary_key=True)
    consumer_id: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[str] = mapped_column(String(64))
    service_id: Mapped[str] = mapped_column(String(36))
    service_version: Mapped[str] = mapped_column(String(64))
    subscription_id: Mapped[str | None] = mapped_column(String(64))
    route: Mapped[str] = mapped_column(String(32))
    status: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    ttfb_ms: Mapped[float | None] = mapped_column(Float)
    input_tokens: Mapped[int] = mapped_column(Integer)
    output_tokens: Mapped[int] = mapped_column(Integer)
    cost: Mapped[Decimal] = mapped_column(Money())
    currency: Mapped[str] = mapped_column(String(3))
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(String(64))
    # when the row reached the database (PostgreSQL: its transaction's now()); the rollup redoes the
    # days of rows stored since its watermark, so a late row (a replayed journal) is counted too
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsageRollup(Base):
    """Usage of one day (UTC) per consumer, service, key and currency, recomputed whole by `rollup-usage`.

    Holds exactly the day's rows stored up to `usage_rollup_state.rolled_through`
    (storage/repositories/usage_rollups.py); kept after the raw rows' month is archived.
    """

    __tablename__ = "usage_rollups"
    __table_args__ = (Index("ix_usage_rollups_service", "service_id", "day"),)

    consumer_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    service_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cost: Mapped[Decimal] = mapped_column(Money())
    latency_p50_ms: Mapped[float] = mapped_column(Float)
    latency_p95_ms: Mapped[float] = mapped_column(Float)
    latency_p99_ms: Mapped[float] = mapped_column(Float)
    computed_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsageRollupState(Base):
    """The rollup's watermark: every usage row stored up to `rolled_through` is in `usage_rollups`."""

    __tablename__ = "usage_rollup_state"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    rolled_through: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsageArchive(Base):
    """A month of usage rows exported to a compressed file, verified, then removed from the database."""

    __tablename__ = "usage_archives"

    month: Mapped[date] = mapped_column(Date, primary_key=True)  # its first day
    part: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0, then 1... for rows arriving after
    path: Mapped[str] = mapped_column(String(1024))
    rows: Mapped[int] = mapped_column(BigInteger)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cost: Mapped[dict[str, Any]] = mapped_column()  # currency -> exact amount as text
    sha256: Mapped[str] = mapped_column(String(64))
    archived_at: Mapped[datetime] = mapped_column(default=utcnow)


class FlowRunRequest(Base):
    """A flow run the platform owes: written in the transaction of the change that needs it and
    started from here with retries (api/run_starter.py), so a submission accepted is never lost
    and never waits for Prefect. `idempotency_key` makes every retried start the same run."""

    __tablename__ = "flow_run_requests"
    __table_args__ = (Index("ix_flow_run_requests_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32))  # publish | deprecate | sync-registry | ...
    deployment: Mapped[str] = mapped_column(String(256))  # 'flow-name/deployment-name'
    parameters: Mapped[dict[str, Any]] = mapped_column()
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    run_name: Mapped[str | None] = mapped_column(String(256))
    tags: Mapped[list[Any]] = mapped_column(default=list)
    service_id: Mapped[str | None] = mapped_column(String(36), index=True)
    version_id: Mapped[str | None] = mapped_column(String(36), index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued | started
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    flow_run_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    request_id: Mapped[str | None] = mapped_column(String(128))  # X-Request-ID of the request that owed it
    traceparent: Mapped[str | None] = mapped_column(String(64))  # its W3C trace context, when tracing is on


# --- Consumption: who may call which service, with which key, under which plan. ---
# The gateway reads these (storage/repositories/api_keys.load_key, access.load_access) and keeps
# them in memory; every change is announced (storage/consumption_feed.py). See docs/consumption.md.


class Consumer(Base):
    """A consumer account; its id is the `sub` of the consumer's bearer tokens."""

    __tablename__ = "consumers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    email: Mapped[str | None] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(16), index=True)  # active | blocked
    blocked_at: Mapped[datetime | None] = mapped_column()
    blocked_by: Mapped[str | None] = mapped_column(String(128))
    blocked_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ApiKey(Base):
    """A consumer's API key. The secret is never stored: only HMAC-SHA256(pepper, id.secret).

    Presented as `mk_live_<id>_<secret>`: the id finds this row by primary key. A key works while
    it is not revoked, not past `expires_at` (rotation sets it to the end of the grace time) and
    its consumer is active.
    """

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    consumer_id: Mapped[str] = mapped_column(ForeignKey("consumers.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    secret_hash: Mapped[str] = mapped_column(String(64))  # hex HMAC-SHA256
    hash_scheme: Mapped[str] = mapped_column(String(16))  # "hmac-sha256" (room for a pepper rotation)
    last4: Mapped[str] = mapped_column(String(4))  # the secret's last characters, to tell keys apart
    service_ids: Mapped[list[Any] | None] = mapped_column(JSON)  # None: every service subscribed to
    requests_per_minute: Mapped[int | None] = mapped_column(Integer)  # per-key limit below the plan's
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    revoked_by: Mapped[str | None] = mapped_column(String(128))
    revoked_reason: Mapped[str | None] = mapped_column(Text)
    rotated_from_id: Mapped[str | None] = mapped_column(String(32))
    replaced_by_id: Mapped[str | None] = mapped_column(String(32))
    last_used_at: Mapped[datetime | None] = mapped_column()  # written by the gateway, in batches


OPEN_SUBSCRIPTION = "status IN ('pending', 'active')"


class ServiceSubscription(Base):
    """A consumer's access to a service under one plan of its pricing.

    `pending` while an approval is awaited, then `active`; it ends `rejected`, `expired` or
    `cancelled`. The plan's limits are copied in when it starts, so a later pricing change
    does not move a running subscription's limits. At most one open (pending or active)
    subscription per consumer and service.
    """

    __tablename__ = "service_subscriptions"
    __table_args__ = (
        Index(
            "uq_service_subscriptions_open",
            "consumer_id",
            "service_id",
            unique=True,
            postgresql_where=sql_text(OPEN_SUBSCRIPTION),
            sqlite_where=sql_text(OPEN_SUBSCRIPTION),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    consumer_id: Mapped[str] = mapped_column(ForeignKey("consumers.id"), index=True)
    service_id: Mapped[str] = mapped_column(ForeignKey("services.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    plan_name: Mapped[str] = mapped_column(String(64))
    plan: Mapped[dict[str, Any]] = mapped_column()  # the plan as published when subscribed
    requests_per_minute: Mapped[int] = mapped_column(Integer)
    key_requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    requests_per_month: Mapped[int | None] = mapped_column(BigInteger)  # None: unlimited
    tokens_per_month: Mapped[int | None] = mapped_column(BigInteger)
    max_tokens_per_request: Mapped[int | None] = mapped_column(Integer)
    price_per_month: Mapped[Any] = mapped_column(Numeric(14, 4))
    currency: Mapped[str | None] = mapped_column(String(3))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    activated_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    ended_by: Mapped[str | None] = mapped_column(String(128))
    ended_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AccessRequest(Base):
    """A subscription waiting for the provider's or governance's approval (an approve-access run)."""

    __tablename__ = "access_requests"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    subscription_id: Mapped[str] = mapped_column(ForeignKey("service_subscriptions.id"), unique=True)
    service_id: Mapped[str] = mapped_column(ForeignKey("services.id"), index=True)
    provider_id: Mapped[str] = mapped_column(String(128), index=True)
    consumer_id: Mapped[str] = mapped_column(ForeignKey("consumers.id"), index=True)
    reason: Mapped[str] = mapped_column(Text)  # why approval is needed
    message: Mapped[str | None] = mapped_column(Text)  # the consumer's justification
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending, approved, rejected, expired, cancelled
    flow_run_id: Mapped[str | None] = mapped_column(String(36), index=True)
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    decided_at: Mapped[datetime | None] = mapped_column()
    reviewer: Mapped[str | None] = mapped_column(String(128))
    reviewer_role: Mapped[str | None] = mapped_column(String(32))
    comment: Mapped[str | None] = mapped_column(Text)


class ServiceCredential(Base):
    """What the marketplace sends the provider instead of the consumer's key; encrypted at rest."""

    __tablename__ = "service_credentials"

    service_id: Mapped[str] = mapped_column(ForeignKey("services.id"), primary_key=True)
    scheme: Mapped[str] = mapped_column(String(16))  # bearer | header
    header_name: Mapped[str] = mapped_column(String(128))
    ciphertext: Mapped[str] = mapped_column(Text)  # Fernet token of the value
    key_id: Mapped[str] = mapped_column(String(32))  # which configured encryption key made it
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(128))


class SigningSecret(Base):
    """A per-service secret the gateway signs its calls with (core/signing.py); encrypted at rest.

    The newest is current; an older one keeps being signed with until `expires_at` (rotation
    grace), so a provider can roll its verifier over without refusing calls.
    """

    __tablename__ = "signing_secrets"
    __table_args__ = (
        Index("ix_signing_secrets_service_created", "service_id", "id"),
        Index(
            "uq_signing_secrets_current",
            "service_id",
            unique=True,
            postgresql_where=sql_text("expires_at IS NULL"),
            sqlite_where=sql_text("expires_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(ForeignKey("services.id"))
    ciphertext: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    revealed_at: Mapped[datetime | None] = mapped_column()  # shown to the provider (once)
    expires_at: Mapped[datetime | None] = mapped_column()  # None while current


# --- Statements and quota alerts (docs/statements.md). Statements, lines and adjustments are
# append-only in the database (triggers refuse UPDATE and DELETE): a correction is an adjustment.


class Statement(Base):
    """What a consumer owes, or a provider earns, for one calendar month (UTC) in one currency."""

    __tablename__ = "statements"
    __table_args__ = (
        UniqueConstraint("party_type", "party_id", "period", "currency", name="uq_statements_party_period"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    party_type: Mapped[str] = mapped_column(String(16))  # consumer | provider
    party_id: Mapped[str] = mapped_column(String(128))
    period: Mapped[str] = mapped_column(String(7), index=True)  # YYYY-MM
    currency: Mapped[str] = mapped_column(String(3))
    period_start: Mapped[datetime] = mapped_column()
    period_end: Mapped[datetime] = mapped_column()
    requests: Mapped[int] = mapped_column(BigInteger)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    gross: Mapped[Decimal] = mapped_column(Money())  # exact: the usage rows' costs plus the plan fees
    plan_fees: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))  # the month's share of plan prices
    fee_percent: Mapped[Decimal] = mapped_column(Numeric(7, 4))  # the marketplace's cut (providers; 0 for consumers)
    fee: Mapped[Decimal] = mapped_column(Money())
    net: Mapped[Decimal] = mapped_column(Money())  # gross - fee, exact
    total: Mapped[Decimal] = mapped_column(Numeric(18, 2))  # net rounded to the cent (half up)
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    flow_run_id: Mapped[str | None] = mapped_column(String(36))


class StatementLine(Base):
    """One service on a statement."""

    __tablename__ = "statement_lines"
    __table_args__ = (UniqueConstraint("statement_id", "service_id", name="uq_statement_lines_service"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    statement_id: Mapped[str] = mapped_column(ForeignKey("statements.id"))
    service_id: Mapped[str] = mapped_column(String(36))
    service_name: Mapped[str] = mapped_column(String(128))
    requests: Mapped[int] = mapped_column(BigInteger)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    gross: Mapped[Decimal] = mapped_column(Money())  # usage costs plus plan fees
    plan_fees: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))
    fee: Mapped[Decimal] = mapped_column(Money())
    net: Mapped[Decimal] = mapped_column(Money())


class StatementAdjustment(Base):
    """A correction to an issued statement (positive: more owed or earned), added by an admin."""

    __tablename__ = "statement_adjustments"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    statement_id: Mapped[str] = mapped_column(ForeignKey("statements.id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Money())
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))


class QuotaUsage(Base):
    """A subscription's quota-counted usage in one month, kept by the usage writer with the rows it stores."""

    __tablename__ = "quota_usage"

    subscription_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger)
    tokens: Mapped[int] = mapped_column(BigInteger)


class QuotaAlert(Base):
    """A subscription reached a threshold of a monthly quota: once per period, metric and threshold."""

    __tablename__ = "quota_alerts"
    __table_args__ = (
        UniqueConstraint("subscription_id", "period", "metric", "threshold", name="uq_quota_alerts_once"),
        Index("ix_quota_alerts_consumer", "consumer_id", "period"),
        Index("ix_quota_alerts_unnotified", "notified_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    subscription_id: Mapped[str] = mapped_column(String(64))
    consumer_id: Mapped[str] = mapped_column(String(128))
    service_id: Mapped[str] = mapped_column(String(36))
    period: Mapped[str] = mapped_column(String(7))
    metric: Mapped[str] = mapped_column(String(16))  # requests | tokens
    threshold: Mapped[int] = mapped_column(Integer)  # percent
    used: Mapped[int] = mapped_column(BigInteger)
    quota: Mapped[int] = mapped_column(BigInteger)
    reached_at: Mapped[datetime] = mapped_column(default=utcnow)
    notified_at: Mapped[datetime | None] = mapped_column()
    webhook_event_id: Mapped[str | None] = mapped_column(String(36))
