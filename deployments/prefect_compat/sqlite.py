"""The Prefect server on SQLite (the embedded default): transactions that take the write lock first.

Applied by deployments/prefect_cli.py to the stack's Prefect server and services. No public way:
no Prefect setting chooses how its SQLite transactions begin (see `serialize_sqlite_writes`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

log = logging.getLogger("marketplace.prefect_compat")


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
