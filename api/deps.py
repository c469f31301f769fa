"""Request-scoped dependencies: a database session committed by the request, the orchestrator, the status view."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session

from api.orchestrator import Orchestrator
from api.status.view import StatusView
from core.errors import SpecValidationError
from core.settings import Settings, get_settings
from storage.database import session_scope


def db_session() -> Iterator[Session]:
    """A session the request commits when it succeeds."""
    with session_scope() as session:
        yield session


# The dependencies below only read memory: async, so FastAPI calls them on the event loop
# instead of sending each to the thread pool and back (a sync dependency's cost on every request).


async def orchestrator(request: Request) -> Orchestrator:
    orch: Orchestrator = request.app.state.orchestrator
    return orch


async def status_view(request: Request) -> StatusView:
    view: StatusView = request.app.state.status_view
    return view


async def settings() -> Settings:
    return get_settings()


DbSession = Annotated[Session, Depends(db_session)]
OrchestratorDep = Annotated[Orchestrator, Depends(orchestrator)]
StatusViewDep = Annotated[StatusView, Depends(status_view)]
SettingsDep = Annotated[Settings, Depends(settings)]

# Deeper pages than this are refused (422) rather than handed to the database as an out-of-range number.
MAX_OFFSET = 1_000_000
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip.")]
# The page size of every list (the audit trail alone allows longer pages).
MAX_LIMIT = 100
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="The most items to return.")]


async def refuse_nul_characters(request: Request) -> None:
    """422 for a NUL in a path or query parameter: no store keeps one (PostgreSQL refuses it outright)."""
    problems = [
        {"pointer": f"/{where}/{name}", "message": "must not contain NUL (\\u0000) characters", "code": "nul_character"}
        for where, params in (("path", request.path_params.items()), ("query", request.query_params.multi_items()))
        for name, value in params
        if "\x00" in str(value)
    ]
    if problems:
        raise SpecValidationError("request parameters are invalid", problems)
