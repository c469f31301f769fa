"""What routes are handed: the app's settings, a database session committed by the request, the engine,
the read cache, the search index, the orchestrator, the status view.

Built once per app (api/app.py: `create_app` holds the settings, its lifespan the rest, on `app.state`)
and handed to routes as the typed dependencies at the bottom; route modules don't call
the settings, cache or search index accessors themselves. An app used without its
lifespan (a `TestClient` outside `with`) falls back to the process-wide storage objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from api.orchestrator import Orchestrator
from api.status.view import StatusView
from core.errors import SpecValidationError
from core.settings import Settings
from storage.cache import ReadCache, get_cache
from storage.database import get_engine, session_scope
from storage.search import SearchIndex, get_search_index


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


async def settings(request: Request) -> Settings:
    return app_settings(request)


def app_settings(request: Request) -> Settings:
    """The settings the app was created with (for middleware and dependencies outside a route's signature)."""
    value: Settings = request.app.state.settings
    return value


async def engine(request: Request) -> Engine:
    value: Engine | None = getattr(request.app.state, "engine", None)
    return value if value is not None else get_engine()


async def read_cache(request: Request) -> ReadCache:
    value: ReadCache | None = getattr(request.app.state, "cache", None)
    return value if value is not None else get_cache()


async def search_index(request: Request) -> SearchIndex:
    value: SearchIndex | None = getattr(request.app.state, "search_index", None)
    return value if value is not None else get_search_index(app_settings(request))


DbSession = Annotated[Session, Depends(db_session)]
OrchestratorDep = Annotated[Orchestrator, Depends(orchestrator)]
StatusViewDep = Annotated[StatusView, Depends(status_view)]
SettingsDep = Annotated[Settings, Depends(settings)]
EngineDep = Annotated[Engine, Depends(engine)]
CacheDep = Annotated[ReadCache, Depends(read_cache)]
SearchIndexDep = Annotated[SearchIndex, Depends(search_index)]

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
