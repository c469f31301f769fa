"""Usage lifecycle: when each usage record was stored, daily rollups, their watermark, archived months.

Revision ID: 0008_usage_rollups
Revises: 0006_gateway_usage
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_usage_rollups"
down_revision = "0006_gateway_usage"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def _money() -> sa.types.TypeEngine[object]:
    # as storage.models.Money: NUMERIC on PostgreSQL, the exact text on SQLite (never a float)
    return sa.String(48) if op.get_bind().dialect.name == "sqlite" else sa.Numeric(24, 12)


def _recorded_at() -> None:
    """`recorded_at`: when the row reached the database, which says which days a rollup must redo."""
    if op.get_bind().dialect.name == "postgresql":
        # now() is stable, so existing rows get the migration's time without a rewrite of the table;
        # a BRIN index costs next to nothing on insert and rows arrive in recorded_at order
        op.execute("ALTER TABLE usage_records ADD COLUMN recorded_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()")
        op.execute("CREATE INDEX ix_usage_records_recorded ON usage_records USING brin (recorded_at)")
    else:
        # SQLite allows only a constant default here: rows stored before count as stored long ago
        op.execute(
            "ALTER TABLE usage_records ADD COLUMN recorded_at DATETIME NOT NULL DEFAULT '1970-01-01 00:00:00.000000'"
        )
        op.create_index("ix_usage_records_recorded", "usage_records", ["recorded_at"])


def upgrade() -> None:
    _recorded_at()
    op.create_table(
        "usage_rollups",
        sa.Column("consumer_id", sa.String(128), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("service_id", sa.String(36), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", _money(), nullable=False),
        sa.Column("latency_p50_ms", sa.Float(), nullable=False),
        sa.Column("latency_p95_ms", sa.Float(), nullable=False),
        sa.Column("latency_p99_ms", sa.Float(), nullable=False),
        sa.Column("computed_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("consumer_id", "day", "service_id", "key_id", "currency"),
    )
    op.create_index("ix_usage_rollups_service", "usage_rollups", ["service_id", "day"])
    op.create_table(
        "usage_rollup_state",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("rolled_through", TZ, nullable=True),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_table(
        "usage_archives",
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.JSON(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("archived_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("month", "part"),
    )


def downgrade() -> None:
    op.drop_table("usage_archives")
    op.drop_table("usage_rollup_state")
    op.drop_index("ix_usage_rollups_service", table_name="usage_rollups")
    op.drop_table("usage_rollups")
    op.drop_index("ix_usage_records_recorded", table_name="usage_records")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE usage_records DROP COLUMN recorded_at")
    else:
        with op.batch_alter_table("usage_records") as batch:
            batch.drop_column("recorded_at")
