"""Statements bill plan prices: each line and each statement carries the month's plan fees.

Revision ID: 0012_statement_plan_fees
Revises: 0011_search_signals
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_statement_plan_fees"
down_revision = "0011_search_signals"
branch_labels = None
depends_on = None

# Money columns: NUMERIC on PostgreSQL, the amount's exact text on SQLite (storage.models.Money).
# A plain ADD COLUMN with a constant default: SQLite's table rebuild (batch mode) would drop the
# triggers that keep issued statements unchangeable, and issued statements had no plan fees.
TABLES = ("statement_lines", "statements")


def _money() -> sa.types.TypeEngine[object]:
    return sa.String(48) if op.get_bind().dialect.name == "sqlite" else sa.Numeric(24, 12)


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("plan_fees", _money(), nullable=False, server_default="0"))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, recreate="never") as batch:
            batch.drop_column("plan_fees")
