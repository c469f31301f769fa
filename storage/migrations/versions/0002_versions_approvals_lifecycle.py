"""Per-version pipeline state, approvals, deprecation schedule and archives.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("service_versions") as batch:
        batch.add_column(sa.Column("current_phase", sa.String(64)))
        batch.add_column(sa.Column("failure_phase", sa.String(64)))
        batch.add_column(sa.Column("failure_reason", sa.Text))
        batch.add_column(sa.Column("registry_id", sa.String(128)))
        batch.add_column(sa.Column("updated_at", TZ))
    op.create_index("ix_service_versions_status", "service_versions", ["status"])
    op.create_index("ix_service_versions_flow_run_id", "service_versions", ["flow_run_id"])

    with op.batch_alter_table("services") as batch:
        batch.add_column(sa.Column("sunset_at", TZ))
        batch.add_column(sa.Column("retirement_flow_run_id", sa.String(36)))
        batch.add_column(sa.Column("archived_at", TZ))

    op.create_table(
        "approvals",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("service_id", sa.String(36), sa.ForeignKey("services.id"), nullable=False),
        sa.Column("version_id", sa.String(36), sa.ForeignKey("service_versions.id"), nullable=False),
        sa.Column("flow_run_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requested_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("decided_at", TZ),
        sa.Column("reviewer", sa.String(128)),
        sa.Column("comment", sa.Text),
        sa.UniqueConstraint("version_id", name="uq_approvals_version_id"),
    )
    op.create_index("ix_approvals_status", "approvals", ["status"])
    op.create_index("ix_approvals_service_id", "approvals", ["service_id"])

    op.create_table(
        "service_archives",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("service_id", sa.String(36), sa.ForeignKey("services.id"), nullable=False, unique=True),
        sa.Column("archived_at", TZ, nullable=False),
        sa.Column("record", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("service_archives")
    op.drop_table("approvals")
    with op.batch_alter_table("services") as batch:
        batch.drop_column("archived_at")
        batch.drop_column("retirement_flow_run_id")
        batch.drop_column("sunset_at")
    op.drop_index("ix_service_versions_flow_run_id", "service_versions")
    op.drop_index("ix_service_versions_status", "service_versions")
    with op.batch_alter_table("service_versions") as batch:
        for column in ("updated_at", "registry_id", "failure_reason", "failure_phase", "current_phase"):
            batch.drop_column(column)
