"""Compensation for what a flow wrote outward, kept on a Prefect transaction.

The transaction is driven explicitly rather than entered with `with transaction()`:
Prefect rolls back an enclosing transaction whenever any task attempt inside it
fails, including an attempt it is about to retry, so a transient registry or
endpoint hiccup would undo work the pipeline then goes on to complete. Here the
flow rolls back only when it gives up; hooks still run in reverse order, through
Prefect's hook machinery and logging.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prefect.transactions import Transaction

Undo = Callable[[Transaction], None]


class Compensation:
    """Undo steps registered as the pipeline writes outward, run newest first on rollback."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> None:
        self._txn = Transaction(logger=logger)
        self._logger = logger
        self.steps: list[str] = []
        self.failures: list[str] = []

    def register(self, undo: Undo, **values: Any) -> None:
        """Add an undo step; `values` are what it needs to know (read with `txn.get`)."""
        for name, value in values.items():
            self._txn.set(name, value)
        self._txn.stage(None, on_rollback_hooks=[self._resilient(undo)])
        self.steps.append(undo.__name__)

    def rollback(self) -> list[str]:
        """Run every undo step, newest first; one failing does not stop the others."""
        self._txn.rollback()
        return self.failures

    def commit(self) -> None:
        """The pipeline succeeded: nothing to undo."""
        self._txn.commit()

    def _resilient(self, undo: Undo) -> Undo:
        def hook(txn: Transaction) -> None:
            try:
                undo(txn)
            except Exception as exc:  # keep compensating; the failure is reported by the flow
                self._logger.exception("compensation step %s failed", undo.__name__)
                self.failures.append(f"{undo.__name__}: {exc}")

        hook.__name__ = undo.__name__
        return hook
