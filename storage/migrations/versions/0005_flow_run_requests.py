"""Durable intake: flow runs owed by accepted requests, started from this table with retries.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "flow_run_requests",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("deployment", sa.String(256), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False, unique=True),
        sa.Column("run_name", sa.String(256), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("service_id", sa.String(36), nullable=True),
        sa.Column("version_id", sa.String(36), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("flow_run_id", sa.String(36), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("next_attempt_at", TZ, nullable=False),
        sa.Column("started_at", TZ, nullable=True),
    )
    op.create_index("ix_flow_run_requests_due", "flow_run_requests", ["status", "next_attempt_at"])
    op.create_index("ix_flow_run_requests_service_id", "flow_run_requests", ["service_id"])
    op.create_index("ix_flow_run_requests_version_id", "flow_run_requests", ["version_id"])


def downgrade() -> None:
    op.drop_table("flow_run_requests")
