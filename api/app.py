"""Application factory: routers, error mapping and the Prefect client's lifetime."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from api import metrics
from api.deps import refuse_nul_characters
from api.errors import install_error_handlers
from api.idempotency import IdempotencyMiddleware
from api.middleware import install_observability
from api.orchestrator import Orchestrator
from api.rate_limit import PublishRateLimiter
from api.routes import approvals, audit, events, health, schemas, search, services, usage, versions, webhooks
from core.gc_pauses import freeze_startup_objects
from core.realtime import make_process_realtime
from core.settings import get_settings
from storage.cache import get_cache

API_PREFIX = "/api/v1"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    orchestrator = Orchestrator(get_settings().prefect)
    orchestrator.open()
    app.state.orchestrator = orchestrator
    get_cache().listen()  # status reads from memory from the first one on
    if get_settings().api.realtime_priority:
        make_process_realtime()  # see core/realtime.py
    freeze_startup_objects()  # the last step of start-up: see core/gc_pauses.py
    try:
        yield
    finally:
        orchestrator.close()


def create_app() -> FastAPI:
    """The marketplace publishing API."""
    settings = get_settings()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the Prefect client logs every call at INFO
    app = FastAPI(
        title="LLM Marketplace — Publishing API",
        version=health.VERSION,
        description="Providers publish LLM services; each publication is a Prefect flow run.",
        lifespan=lifespan,
        dependencies=[Depends(refuse_nul_characters)],
    )
    install_error_handlers(app)
    install_observability(app, settings)  # JSON logs, request ids, HTTP metrics
    app.state.rate_limiter = PublishRateLimiter(settings)
    app.add_middleware(IdempotencyMiddleware)
    app.include_router(metrics.router)  # GET /metrics, unauthenticated: internal network only
    app.include_router(health.router)
    app.include_router(health.router, prefix=API_PREFIX, include_in_schema=False)
    app.include_router(search.router, prefix=API_PREFIX)  # before /services/{service_id}
    app.include_router(usage.router, prefix=API_PREFIX)
    app.include_router(services.router, prefix=API_PREFIX)
    app.include_router(versions.router, prefix=API_PREFIX)
    app.include_router(approvals.router, prefix=API_PREFIX)
    app.include_router(events.router, prefix=API_PREFIX)
    app.include_router(schemas.router, prefix=API_PREFIX)
    app.include_router(webhooks.router, prefix=API_PREFIX)
    app.include_router(audit.router, prefix=API_PREFIX)
    return app


app = create_app()
