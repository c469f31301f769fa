"""What a piece of code asks of the marketplace database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event

from storage.database import get_engine


def database_reads(read: Callable[[], Any]) -> list[str]:
    """The SELECT statements sent to the database (by any thread of this process) while `read()` runs."""
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(get_engine(), "before_cursor_execute", count)
    try:
        read()
    finally:
        event.remove(get_engine(), "before_cursor_execute", count)
    return statements
