"""Where an owed flow run came from: the request id and trace context of the request that owed it.

Revision ID: 0013_observability
Revises: 0012_statement_plan_fees
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_observability"
down_revision = "0012_statement_plan_fees"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The API's (or gateway's) X-Request-ID, tagged `request:<id>` on the run when it is created.
    op.add_column("flow_run_requests", sa.Column("request_id", sa.String(128)))
    # The W3C traceparent of the request's span when tracing is on: the run's trace continues it.
    op.add_column("flow_run_requests", sa.Column("traceparent", sa.String(64)))


def downgrade() -> None:
    op.drop_column("flow_run_requests", "traceparent")
    op.drop_column("flow_run_requests", "request_id")
