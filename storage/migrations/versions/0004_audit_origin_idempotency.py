"""Audit records carry the caller's IP, user agent and before/after; Idempotency-Key storage.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Adding columns is not an UPDATE: the append-only triggers stay as they are.
    with op.batch_alter_table("audit_log", recreate="never") as batch:
        batch.add_column(sa.Column("actor_ip", sa.String(64), nullable=True))
        batch.add_column(sa.Column("user_agent", sa.String(512), nullable=True))
        batch.add_column(sa.Column("before", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("after", sa.JSON(), nullable=True))
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("principal", sa.String(160), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response_headers", sa.JSON(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.UniqueConstraint("principal", "key", name="uq_idempotency_keys_principal_key"),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_expires_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    with op.batch_alter_table("audit_log", recreate="never") as batch:
        for column in ("after", "before", "user_agent", "actor_ip"):
            batch.drop_column(column)
