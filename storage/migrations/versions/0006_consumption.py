"""Consumption: consumers, API keys, subscriptions under plans, access requests, provider credentials,
signing secrets; audit records name the consumer; a change counter for gateways without Redis.

Revision ID: 0005_consumption
Revises: 0005
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_consumption"
down_revision = "0005"  # after the flow run requests of main (re-chained when main was merged in)
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
OPEN_SUBSCRIPTION = "status IN ('pending', 'active')"


def upgrade() -> None:
    _consumers_and_keys()
    _subscriptions()
    _secrets()
    # Adding a column is not an UPDATE: audit_log's append-only triggers stay as they are.
    with op.batch_alter_table("audit_log", recreate="never") as batch:
        batch.add_column(sa.Column("consumer_id", sa.String(128), nullable=True))
    op.create_index("ix_audit_log_consumer_id", "audit_log", ["consumer_id"])
    if op.get_bind().dialect.name == "postgresql":  # SQLite does not enforce VARCHAR lengths
        op.alter_column("outbox_events", "aggregate_id", type_=sa.String(128), existing_type=sa.String(36))
    # Gateways without Redis poll this row to learn that keys, consumers or access changed.
    op.execute("INSERT INTO cache_stamps (name, value) VALUES ('consumption', 0)")


def _consumers_and_keys() -> None:
    op.create_table(
        "consumers",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("email", sa.String(320)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("blocked_at", TZ),
        sa.Column("blocked_by", sa.String(128)),
        sa.Column("blocked_reason", sa.Text),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_index("ix_consumers_status", "consumers", ["status"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("consumer_id", sa.String(128), sa.ForeignKey("consumers.id"), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("hash_scheme", sa.String(16), nullable=False),
        sa.Column("last4", sa.String(4), nullable=False),
        sa.Column("service_ids", sa.JSON),
        sa.Column("requests_per_minute", sa.Integer),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("expires_at", TZ),
        sa.Column("revoked_at", TZ),
        sa.Column("revoked_by", sa.String(128)),
        sa.Column("revoked_reason", sa.Text),
        sa.Column("rotated_from_id", sa.String(32)),
        sa.Column("replaced_by_id", sa.String(32)),
        sa.Column("last_used_at", TZ),
    )
    op.create_index("ix_api_keys_consumer_id", "api_keys", ["consumer_id"])


def _subscriptions() -> None:
    op.create_table(
        "service_subscriptions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("consumer_id", sa.String(128), sa.ForeignKey("consumers.id"), nullable=False),
        sa.Column("service_id", sa.String(36), sa.ForeignKey("services.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("plan_name", sa.String(64), nullable=False),
        sa.Column("plan", sa.JSON, nullable=False),
        sa.Column("requests_per_minute", sa.Integer, nullable=False),
        sa.Column("key_requests_per_minute", sa.Integer),
        sa.Column("requests_per_month", sa.BigInteger),
        sa.Column("tokens_per_month", sa.BigInteger),
        sa.Column("max_tokens_per_request", sa.Integer),
        sa.Column("price_per_month", sa.Numeric(14, 4), nullable=False),
        sa.Column("currency", sa.String(3)),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("activated_at", TZ),
        sa.Column("ended_at", TZ),
        sa.Column("ended_by", sa.String(128)),
        sa.Column("ended_reason", sa.Text),
        sa.Column("updated_at", TZ, nullable=False),
    )
    for column in ("consumer_id", "service_id", "status"):
        op.create_index(f"ix_service_subscriptions_{column}", "service_subscriptions", [column])
    op.create_index(
        "uq_service_subscriptions_open",
        "service_subscriptions",
        ["consumer_id", "service_id"],
        unique=True,
        postgresql_where=sa.text(OPEN_SUBSCRIPTION),
        sqlite_where=sa.text(OPEN_SUBSCRIPTION),
    )
    op.create_table(
        "access_requests",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "subscription_id", sa.String(36), sa.ForeignKey("service_subscriptions.id"), nullable=False, unique=True
        ),
        sa.Column("service_id", sa.String(36), sa.ForeignKey("services.id"), nullable=False),
        sa.Column("provider_id", sa.String(128), nullable=False),
        sa.Column("consumer_id", sa.String(128), sa.ForeignKey("consumers.id"), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("message", sa.Text),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("flow_run_id", sa.String(36)),
        sa.Column("requested_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("decided_at", TZ),
        sa.Column("reviewer", sa.String(128)),
        sa.Column("reviewer_role", sa.String(32)),
        sa.Column("comment", sa.Text),
    )
    for column in ("service_id", "provider_id", "consumer_id", "status", "flow_run_id"):
        op.create_index(f"ix_access_requests_{column}", "access_requests", [column])


def _secrets() -> None:
    op.create_table(
        "service_credentials",
        sa.Column("service_id", sa.String(36), sa.ForeignKey("services.id"), primary_key=True),
        sa.Column("scheme", sa.String(16), nullable=False),
        sa.Column("header_name", sa.String(128), nullable=False),
        sa.Column("ciphertext", sa.Text, nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "signing_secrets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("service_id", sa.String(36), sa.ForeignKey("services.id"), nullable=False),
        sa.Column("ciphertext", sa.Text, nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("revealed_at", TZ),
        sa.Column("expires_at", TZ),
    )
    op.create_index("ix_signing_secrets_service_created", "signing_secrets", ["service_id", "id"])
    current = sa.text("expires_at IS NULL")  # one current secret per service; replaced ones carry an end
    op.create_index(
        "uq_signing_secrets_current",
        "signing_secrets",
        ["service_id"],
        unique=True,
        postgresql_where=current,
        sqlite_where=current,
    )


def downgrade() -> None:
    op.execute("DELETE FROM cache_stamps WHERE name = 'consumption'")
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("outbox_events", "aggregate_id", type_=sa.String(36), existing_type=sa.String(128))
    op.drop_index("ix_audit_log_consumer_id", table_name="audit_log")
    with op.batch_alter_table("audit_log", recreate="never") as batch:
        batch.drop_column("consumer_id")
    for table in ("signing_secrets", "service_credentials", "access_requests", "service_subscriptions", "api_keys"):
        op.drop_table(table)
    op.drop_table("consumers")
