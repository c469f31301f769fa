"""Provider health: each check of a service (probes, the gateway's traffic, the SLA verdict) and
where each service stands (the runs of breaching and healthy checks).

Revision ID: 0010_service_health
Revises: 0009_statements
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_service_health"
down_revision = "0009_statements"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "service_health",
        sa.Column("service_id", sa.String(36), sa.ForeignKey("services.id"), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("consecutive_breaches", sa.Integer, nullable=False, server_default="0"),
        sa.Column("consecutive_healthy", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_slot", TZ),
        sa.Column("last_check_id", sa.Integer),
        sa.Column("suspended_at", TZ),
        sa.Column("reinstated_at", TZ),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_table(
        "service_health_checks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("service_id", sa.String(36), sa.ForeignKey("services.id"), nullable=False),
        sa.Column("slot", TZ, nullable=False),
        sa.Column("checked_at", TZ, nullable=False),
        sa.Column("flow_run_id", sa.String(36)),
        sa.Column("service_status", sa.String(32), nullable=False),
        sa.Column("health_ok", sa.Boolean, nullable=False),
        sa.Column("health_status", sa.Integer),
        sa.Column("health_ms", sa.Float),
        sa.Column("call_ok", sa.Boolean),  # NULL: not made (no credential stored)
        sa.Column("call_status", sa.Integer),
        sa.Column("call_ms", sa.Float),
        sa.Column("probe_errors", sa.JSON, nullable=False),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("successes", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("availability", sa.Float, nullable=False),
        sa.Column("latency_p95_ms", sa.Float),
        sa.Column("sla_availability", sa.Float),
        sa.Column("sla_latency_ms", sa.Integer),
        sa.Column("breached", sa.Boolean, nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("action", sa.String(16)),
        sa.Column("note", sa.Text),
    )
    op.create_index("uq_service_health_checks_slot", "service_health_checks", ["service_id", "slot"], unique=True)
    op.create_index("ix_service_health_checks_checked", "service_health_checks", ["service_id", "checked_at"])


def downgrade() -> None:
    op.drop_table("service_health_checks")
    op.drop_table("service_health")
