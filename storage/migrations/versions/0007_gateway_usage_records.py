"""Usage records of gateway calls; on PostgreSQL partitioned by month (declarative partitioning).

Revision ID: 0006_gateway_usage
Revises: 0005_consumption
Create Date: 2026-12-06
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0006_gateway_usage"
down_revision = "0005_consumption"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
COLUMNS = """
    request_id VARCHAR(64) NOT NULL,
    occurred_at TIMESTAMP WITH TIME ZONE NOT NULL,
    consumer_id VARCHAR(128) NOT NULL,
    key_id VARCHAR(64) NOT NULL,
    service_id VARCHAR(36) NOT NULL,
    service_version VARCHAR(64) NOT NULL,
    subscription_id VARCHAR(64),
    route VARCHAR(32) NOT NULL,
    status INTEGER NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    ttfb_ms DOUBLE PRECISION,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost {money} NOT NULL,
    currency VARCHAR(3) NOT NULL,
    stream BOOLEAN NOT NULL DEFAULT false,
    error VARCHAR(64),
    PRIMARY KEY (request_id, occurred_at)
"""


def _months() -> list[tuple[str, str, str]]:
    """The current and the next month: (suffix, first day, first day of the month after)."""
    now = datetime.now(UTC)
    firsts = [datetime(now.year + (now.month + i - 1) // 12, (now.month + i - 1) % 12 + 1, 1) for i in range(3)]
    return [(f"{a:%Y_%m}", f"{a:%Y-%m-%d}", f"{b:%Y-%m-%d}") for a, b in zip(firsts, firsts[1:], strict=False)]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        columns = COLUMNS.format(money="NUMERIC(24, 12)")
        op.execute(f"CREATE TABLE usage_records ({columns}) PARTITION BY RANGE (occurred_at)")
        for suffix, start, end in _months():
            op.execute(
                f"CREATE TABLE IF NOT EXISTS usage_records_{suffix} PARTITION OF usage_records "
                f"FOR VALUES FROM ('{start}') TO ('{end}')"
            )
    else:
        # SQLite has no decimal type: amounts are kept as text (storage.models.Money), never as floats
        op.execute(f"CREATE TABLE usage_records ({COLUMNS.format(money='VARCHAR(48)')})")
    op.create_index("ix_usage_records_consumer", "usage_records", ["consumer_id", "occurred_at"])
    op.create_index("ix_usage_records_service", "usage_records", ["service_id", "occurred_at"])


def downgrade() -> None:
    op.drop_table("usage_records")  # on PostgreSQL its partitions go with it
