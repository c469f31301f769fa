"""One page of a filtered query and how many rows match over all pages: what every list endpoint's
repository function returns (the API wraps it in its Page envelope)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session


def count(session: Session, query: Select[Any]) -> int:
    """Rows the query matches, filters applied, before any paging."""
    return session.scalar(select(func.count()).select_from(query.subquery())) or 0


def page(
    session: Session, query: Select[Any], order: Sequence[Any], offset: int, limit: int
) -> tuple[Sequence[Any], int]:
    """The rows of one page in `order` (its last column a tie-breaker, so pages never overlap), and the total."""
    rows = session.scalars(query.order_by(*order).offset(offset).limit(limit)).all()
    return rows, count(session, query)
