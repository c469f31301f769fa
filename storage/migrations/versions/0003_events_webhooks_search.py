"""Outbox relay bookkeeping, webhook deliveries and subscriptions, the search index.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)

# PostgreSQL: weighted full-text vector kept by the database itself (name > description > tags).
PG_SEARCH = """
ALTER TABLE search_documents ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('english', coalesce(name, '')), 'A') ||
    setweight(to_tsvector('english', coalesce(description, '')), 'B') ||
    setweight(to_tsvector('english', coalesce(tags_text, '')), 'C')
) STORED;
CREATE INDEX ix_search_documents_vector ON search_documents USING GIN (search_vector);
-- The all-tags filter: jsonb containment (the column is json, which has no @> of its own).
CREATE INDEX ix_search_documents_tags ON search_documents USING GIN ((tags::jsonb) jsonb_path_ops);
"""

# SQLite: an FTS5 index over the same columns, kept in step by triggers.
SQLITE_SEARCH = [
    "CREATE VIRTUAL TABLE search_fts USING fts5(name, description, tags_text, content='search_documents', "
    "content_rowid='rowid', tokenize='porter unicode61')",
    "CREATE TRIGGER search_documents_ai AFTER INSERT ON search_documents BEGIN "
    "INSERT INTO search_fts(rowid, name, description, tags_text) "
    "VALUES (new.rowid, new.name, new.description, new.tags_text); END",
    "CREATE TRIGGER search_documents_ad AFTER DELETE ON search_documents BEGIN "
    "INSERT INTO search_fts(search_fts, rowid, name, description, tags_text) "
    "VALUES ('delete', old.rowid, old.name, old.description, old.tags_text); END",
    "CREATE TRIGGER search_documents_au AFTER UPDATE ON search_documents BEGIN "
    "INSERT INTO search_fts(search_fts, rowid, name, description, tags_text) "
    "VALUES ('delete', old.rowid, old.name, old.description, old.tags_text); "
    "INSERT INTO search_fts(rowid, name, description, tags_text) "
    "VALUES (new.rowid, new.name, new.description, new.tags_text); END",
]


def upgrade() -> None:
    with op.batch_alter_table("outbox_events") as batch:
        batch.add_column(sa.Column("next_attempt_at", TZ))
        batch.add_column(sa.Column("dead_at", TZ))
    op.create_index("ix_outbox_events_aggregate_order", "outbox_events", ["aggregate_id", "id"])

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("service_id", sa.String(36)),
        sa.Column("audience", sa.String(16), nullable=False),  # governance | consumers
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),  # pending | delivered | failed
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_status_code", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("delivered_at", TZ),
        sa.UniqueConstraint("event_id", "url", name="uq_webhook_deliveries_event_url"),
    )
    op.create_index("ix_webhook_deliveries_service_id", "webhook_deliveries", ["service_id"])
    op.create_index("ix_webhook_deliveries_status", "webhook_deliveries", ["status"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", sa.String(36), sa.ForeignKey("webhook_deliveries.id"), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("attempted_at", TZ, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("duration_ms", sa.Float, nullable=False),
    )
    op.create_index("ix_webhook_attempts_delivery_id", "webhook_attempts", ["delivery_id"])
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("service_id", sa.String(36), sa.ForeignKey("services.id"), nullable=False),
        sa.Column("consumer_id", sa.String(128), nullable=False),
        sa.Column("callback_url", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("service_id", "callback_url", name="uq_subscriptions_service_url"),
    )
    op.create_index("ix_subscriptions_service_id", "subscriptions", ["service_id"])

    # Change counter for the in-process cache: other processes' writes bump it (see storage/cache.py).
    stamps = op.create_table(
        "cache_stamps", sa.Column("name", sa.String(32), primary_key=True), sa.Column("value", sa.BigInteger, nullable=False)
    )
    op.bulk_insert(stamps, [{"name": "services", "value": 0}])

    op.create_table(
        "search_documents",
        sa.Column("service_id", sa.String(36), sa.ForeignKey("services.id"), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("tags_text", sa.Text, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("pricing_model", sa.String(32)),
        sa.Column("compliance_level", sa.String(32)),
        sa.Column("provider_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("published_at", TZ),
        sa.Column("indexed_at", TZ, nullable=False),
        sa.Column("document", sa.JSON, nullable=False),
    )
    for column in ("category", "pricing_model", "compliance_level", "provider_id", "status"):
        op.create_index(f"ix_search_documents_{column}", "search_documents", [column])
    postgresql = op.get_bind().dialect.name == "postgresql"
    # Newest-first pages (the default listing) read this index in order instead of sorting every
    # match. SQLite puts NULLs last in DESC order already and accepts no NULLS LAST in an index.
    newest = "published_at DESC NULLS LAST, service_id" if postgresql else "published_at DESC, service_id"
    op.create_index("ix_search_documents_newest", "search_documents", [sa.text(newest)])
    if postgresql:
        op.execute(PG_SEARCH)
    else:
        for statement in SQLITE_SEARCH:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        for trigger in ("search_documents_au", "search_documents_ad", "search_documents_ai"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS search_fts")
    op.drop_table("search_documents")
    op.drop_table("cache_stamps")
    op.drop_table("subscriptions")
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_outbox_events_aggregate_order", "outbox_events")
    with op.batch_alter_table("outbox_events") as batch:
        batch.drop_column("dead_at")
        batch.drop_column("next_attempt_at")
