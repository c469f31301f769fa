"""Monthly statements (with their lines and adjustments) and quota alerts (with the counters behind them).

Statements, their lines and adjustments are append-only: triggers refuse UPDATE and DELETE, as on
audit_log. A correction is a new adjustment row, never a change to an issued statement.

Revision ID: 0009_statements
Revises: 0008_usage_rollups
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_statements"
down_revision = "0008_usage_rollups"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
APPEND_ONLY = ("statements", "statement_lines", "statement_adjustments")


def _money() -> sa.types.TypeEngine[object]:
    # SQLite has no decimal type: amounts are kept as their exact text (storage.models.Money)
    return sa.String(48) if op.get_bind().dialect.name == "sqlite" else sa.Numeric(24, 12)


def upgrade() -> None:
    _statements()
    _quotas()
    _append_only()


def _statements() -> None:
    money = _money()
    op.create_table(
        "statements",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("party_type", sa.String(16), nullable=False),  # consumer | provider
        sa.Column("party_id", sa.String(128), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),  # YYYY-MM (UTC)
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("period_start", TZ, nullable=False),
        sa.Column("period_end", TZ, nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("gross", money, nullable=False),
        sa.Column("fee_percent", sa.Numeric(7, 4), nullable=False),
        sa.Column("fee", money, nullable=False),
        sa.Column("net", money, nullable=False),
        sa.Column("total", sa.Numeric(18, 2), nullable=False),
        sa.Column("issued_at", TZ, nullable=False),
        sa.Column("flow_run_id", sa.String(36)),
        # one statement per party, month and currency: a rerun (or two runs at once) issues nothing twice
        sa.UniqueConstraint("party_type", "party_id", "period", "currency", name="uq_statements_party_period"),
    )
    op.create_index("ix_statements_period", "statements", ["period"])
    op.create_table(
        "statement_lines",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("statement_id", sa.String(36), sa.ForeignKey("statements.id"), nullable=False),
        sa.Column("service_id", sa.String(36), nullable=False),
        sa.Column("service_name", sa.String(128), nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("gross", money, nullable=False),
        sa.Column("fee", money, nullable=False),
        sa.Column("net", money, nullable=False),
        sa.UniqueConstraint("statement_id", "service_id", name="uq_statement_lines_service"),
    )
    op.create_table(
        "statement_adjustments",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("statement_id", sa.String(36), sa.ForeignKey("statements.id"), nullable=False),
        sa.Column("amount", money, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
    )
    op.create_index("ix_statement_adjustments_statement_id", "statement_adjustments", ["statement_id"])


def _quotas() -> None:
    op.create_table(
        "quota_usage",
        sa.Column("subscription_id", sa.String(64), primary_key=True),
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("tokens", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "quota_alerts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("subscription_id", sa.String(64), nullable=False),
        sa.Column("consumer_id", sa.String(128), nullable=False),
        sa.Column("service_id", sa.String(36), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),  # requests | tokens
        sa.Column("threshold", sa.Integer, nullable=False),  # percent: 80 | 100
        sa.Column("used", sa.BigInteger, nullable=False),
        sa.Column("quota", sa.BigInteger, nullable=False),
        sa.Column("reached_at", TZ, nullable=False),
        sa.Column("notified_at", TZ),
        sa.Column("webhook_event_id", sa.String(36)),
        # once per period and threshold, whoever detects it and however often
        sa.UniqueConstraint("subscription_id", "period", "metric", "threshold", name="uq_quota_alerts_once"),
    )
    op.create_index("ix_quota_alerts_consumer", "quota_alerts", ["consumer_id", "period"])
    op.create_index("ix_quota_alerts_unnotified", "quota_alerts", ["notified_at"])


def _append_only() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE OR REPLACE FUNCTION statements_append_only() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP "
            "USING ERRCODE = 'insufficient_privilege'; END; $$ LANGUAGE plpgsql"
        )
        for table in APPEND_ONLY:
            for operation in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION statements_append_only()"
                )
        return
    for table in APPEND_ONLY:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {operation} refused'); END"
            )


def downgrade() -> None:
    op.drop_table("quota_alerts")
    op.drop_table("quota_usage")
    for table in APPEND_ONLY:
        for operation in ("update", "delete"):
            if op.get_bind().dialect.name == "postgresql":
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{operation} ON {table}")
            else:
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{operation}")
    op.drop_table("statement_adjustments")
    op.drop_table("statement_lines")
    op.drop_table("statements")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS statements_append_only()")
