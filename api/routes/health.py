"""Liveness and readiness."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text

from api.deps import EngineDep, OrchestratorDep
from api.schemas import Health, Readiness

router = APIRouter(tags=["health"])
VERSION = "0.1.0"


@router.get("/health", response_model=Health, summary="Liveness")
def health() -> Health:
    """The process is up."""
    return Health(status="healthy", service="publishing-service", version=VERSION, timestamp=datetime.now(UTC))


@router.get("/ready", response_model=Readiness, responses={503: {"model": Readiness}}, summary="Readiness")
def ready(orch: OrchestratorDep, engine: EngineDep) -> JSONResponse:
    """Ready when the database answers. Prefect's health is reported too, but does not decide: while it
    is down, submissions are still accepted and their runs start when it answers again."""
    checks = {"database": _check_database(engine), "prefect": "ok" if _safe(orch.healthy) else "unavailable"}
    ok = checks["database"] == "ok"
    body = Readiness(status="ready" if ok else "not_ready", checks=checks)
    return JSONResponse(status_code=200 if ok else 503, content=body.model_dump(by_alias=True))


def _check_database(engine: Engine) -> str:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:
        return "unavailable"
    return "ok"


def _safe(probe: object) -> bool:
    try:
        return bool(probe() if callable(probe) else probe)
    except Exception:
        return False
