"""Real backing services for tests: PostgreSQL databases and Redis, failing in CI when absent."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from sqlalchemy.engine import make_url

CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_URL = os.environ.get("MARKETPLACE_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("MARKETPLACE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def require_tcp(host: str, port: int, what: str) -> None:
    """Skip when a service is missing on a developer machine; fail in CI, where it must be there."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        message = f"{what} is not reachable at {host}:{port}: {exc}"
        if CI:
            pytest.fail(message + " (CI=true: required)")
        pytest.skip(message)


def require_postgres() -> None:
    url = make_url(POSTGRES_URL)
    require_tcp(url.host or "127.0.0.1", url.port or 5432, "PostgreSQL")


def _admin_dsn() -> str:
    url = make_url(POSTGRES_URL).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def create_database(template: str | None = None, prefix: str = "mkt_test") -> str:
    """A new, empty (or template-copied) database; returns its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    clause = f" TEMPLATE {template}" if template else ""
    with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{clause}')
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    name = make_url(url).database
    with psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def temporary_database(template: str | None = None, prefix: str = "mkt_test") -> Iterator[str]:
    url = create_database(template, prefix)
    try:
        yield url
    finally:
        drop_database(url)


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
