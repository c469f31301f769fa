"""What is known about each service's use and health, for discovery to rank and filter by.

Revision ID: 0011_search_signals
Revises: 0010_service_health
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_search_signals"
down_revision = "0010_service_health"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_signals",
        sa.Column("service_id", sa.String(36), sa.ForeignKey("services.id"), primary_key=True),
        # Calls through the gateway in the 30 days before the last refresh (flows/signals.py).
        sa.Column("calls_30d", sa.Integer, nullable=False, server_default="0"),
        # Observed, not promised: fed by the provider-health flow; NULL until something was observed.
        sa.Column("availability", sa.Float),  # percent, 0-100
        sa.Column("latency_p50_ms", sa.Float),
        sa.Column("latency_p95_ms", sa.Float),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    # Filter-only searches ("at least 99.9 % available") and the signal sorts start from these.
    op.create_index("ix_service_signals_calls_30d", "service_signals", ["calls_30d"])
    op.create_index("ix_service_signals_availability", "service_signals", ["availability"])
    op.create_index("ix_service_signals_latency_p95_ms", "service_signals", ["latency_p95_ms"])


def downgrade() -> None:
    op.drop_table("service_signals")
