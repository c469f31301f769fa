"""Every use of a private Prefect name, in one place, for the Prefect version it was written against.

Prefect's public API covers flows, tasks, deployments, clients, workers and events; a few things
this platform needs are only reachable through Prefect's internals. Each is here, with why, and
tests/deployments/test_prefect_compat.py pins what each one assumes (names, signatures,
behaviour), so that a Prefect upgrade fails there, in one obvious place, and not at run time.

Upgrading Prefect: change SUPPORTED below, run `make test`; for each failing contract test, read the
new Prefect code behind the assumption and adapt (or drop) the shim. README "Upgrading Prefect".
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import prefect

log = logging.getLogger("marketplace.prefect_compat")

SUPPORTED = ("3.8.",)  # Prefect versions the shims below were written and tested against


class UnsupportedPrefectVersion(RuntimeError):
    """The installed Prefect is not one this module was written for."""


def require_supported_prefect(version: str = prefect.__version__) -> None:
    """Refuse to start on a Prefect whose internals this module has not been checked against."""
    if not version.startswith(SUPPORTED):
        raise UnsupportedPrefectVersion(
            f"Prefect {version} is installed; deployments/prefect_compat.py was written for "
            f"{', '.join(v + 'x' for v in SUPPORTED)}. Pin prefect in pyproject.toml/requirements.lock, or "
            "follow README 'Upgrading Prefect' to check the shims against the new version."
        )


# ---------------------------------------------------------------- the Prefect server on SQLite


def serialize_sqlite_writes() -> None:
    """Make every transaction of the Prefect server on SQLite take the write lock when it begins.

    Prefect 3.8 begins its transactions DEFERRED unless a caller asks for a row lock: such a
    transaction reads first (the deployment, the run, the work queue) and writes later. In WAL
    mode, when another connection wrote in between, SQLite cannot upgrade the reader to a writer
    and fails at once with `database is locked` (SQLITE_BUSY_SNAPSHOT): the busy timeout Prefect
    sets (60 s) does not apply to that case. Under a burst of runs this failed creates, state
    changes and the UI's Resume with 503s. BEGIN IMMEDIATE takes the lock first, so writers queue
    behind the busy timeout instead and nothing fails; reads outside transactions (most of the API)
    are not affected. No setting exposes this: `AioSqliteConfiguration.begin_transaction` is asked
    for a row-locking transaction every time.
    """
    from prefect.server.database.configurations import AioSqliteConfiguration

    original = AioSqliteConfiguration.begin_transaction
    if getattr(original, "_marketplace_immediate", False):
        return

    @asynccontextmanager
    async def begin_immediate(
        self: AioSqliteConfiguration, session: Any, with_for_update: bool = False
    ) -> AsyncIterator[Any]:
        async with original(self, session, with_for_update=True) as transaction:
            yield transaction

    begin_immediate._marketplace_immediate = True  # type: ignore[attr-defined]
    AioSqliteConfiguration.begin_transaction = begin_immediate  # type: ignore[method-assign]
    log.debug("Prefect's SQLite transactions begin IMMEDIATE")
