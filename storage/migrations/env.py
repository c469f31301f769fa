"""Alembic environment: migrates the URL given by the caller, or the configured database."""

from __future__ import annotations

from alembic import context
from sqlalchemy import pool

from core.settings import get_settings
from storage.database import build_engine
from storage.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().database.url


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = build_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


_ = pool  # keep the import alembic templates expect
if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
