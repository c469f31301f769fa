"""Request-scoped dependencies: a database session committed by the request, the orchestrator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.orchestrator import Orchestrator
from core.settings import Settings, get_settings
from storage.database import session_scope


def db_session() -> Iterator[Session]:
    """A session the request commits when it succeeds."""
    with session_scope() as session:
        yield session


def orchestrator(request: Request) -> Orchestrator:
    orch: Orchestrator = request.app.state.orchestrator
    return orch


DbSession = Annotated[Session, Depends(db_session)]
OrchestratorDep = Annotated[Orchestrator, Depends(orchestrator)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
