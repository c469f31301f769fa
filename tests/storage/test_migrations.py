"""Migrations go up and down cleanly on both backends."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect

from storage.database import get_engine, reset_engine
from storage.migrate import alembic_config


def test_downgrade_to_base_and_upgrade_again(database_url: str) -> None:
    config = alembic_config(database_url)
    command.downgrade(config, "base")
    reset_engine()
    assert "services" not in inspect(get_engine()).get_table_names()
    command.upgrade(config, "head")
    reset_engine()
    tables = set(inspect(get_engine()).get_table_names())
    assert {"services", "service_versions", "approvals", "service_archives", "audit_log", "outbox_events"} <= tables
