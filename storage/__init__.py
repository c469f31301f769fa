"""Persistence: SQLAlchemy models, repositories, sessions and migrations."""
