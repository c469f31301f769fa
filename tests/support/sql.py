"""What a piece of code asks of the marketplace database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event

from storage.database import get_engine
from storage.engine import STAMP_QUERY, change_stamp_engine


def database_reads(read: Callable[[], Any]) -> list[str]:
    """The SELECT statements sent to the database (by any thread of this process) while `read()` runs,
    the change-stamp reads included (on their own connections: one pool checkout each)."""
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    def stamp_read(*_args: Any) -> None:
        statements.append(STAMP_QUERY)

    stamps = change_stamp_engine().pool
    event.listen(get_engine(), "before_cursor_execute", count)
    event.listen(stamps, "checkout", stamp_read)
    try:
        read()
    finally:
        event.remove(get_engine(), "before_cursor_execute", count)
        event.remove(stamps, "checkout", stamp_read)
    return statements
