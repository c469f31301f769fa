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
from api.methods import install_method_check
from api.middleware import install_observability
from api.openapi import install_security_document
from api.orchestrator import Orchestrator
from api.rate_limit import PublishRateLimiter
from api.routes import (
    approvals,
    audit,
    consumers,
    credentials,
    events,
    health,
    schemas,
    search,
    service_health,
    services,
    statements,
    subscriptions,
    usage,
    versions,
    webhooks,
)
from api.run_starter import RunStarter, StarterPolicy
from api.status.view import StatusView
from core.gc_pauses import freeze_startup_objects
from core.realtime import make_process_realtime
from core.settings import Settings, get_settings
from storage.cache import get_cache
from storage.database import get_engine
from storage.repositories import run_requests
from storage.search import get_search_index

API_PREFIX = "/api/v1"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings  # built once by create_app
    orchestrator = Orchestrator(settings.prefect)
    orchestrator.open()
    app.state.orchestrator = orchestrator
    starter = run_starter_for(orchestrator, settings)
    stop_listening = run_requests.when_enqueued(starter.wake)
    starter.start()  # owed runs left by an earlier process are started now
    app.state.engine = get_engine()
    app.state.cache = cache = get_cache()
    app.state.search_index = get_search_index(settings)
    cache.listen()  # status reads from memory from the first one on
    app.state.status_view = StatusView(cache, orchestrator, wait_seconds=settings.api.status_wait_seconds)
    if settings.api.realtime_priority:
        make_process_realtime()  # see core/realtime.py
    freeze_startup_objects()  # the last step of start-up: see core/gc_pauses.py
    try:
        yield
    finally:
        stop_listening()
        starter.stop()
        orchestrator.close()


def run_starter_for(orchestrator: Orchestrator, settings: Settings) -> RunStarter:
    """The starter of owed flow runs; on PostgreSQL several API processes share the queue (row locks)."""
    prefect = settings.prefect
    policy = StarterPolicy(
        poll_seconds=prefect.start_poll_seconds,
        first_retry_seconds=prefect.start_first_retry_seconds,
        max_retry_seconds=prefect.start_max_retry_seconds,
        concurrency=prefect.start_concurrency,
    )
    return RunStarter(orchestrator, policy, lock_rows=get_engine().dialect.name == "postgresql")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The marketplace publishing API, with the given settings or those of the environment, read now.

    The settings are read once here and kept on `app.state`; the lifespan and the routes'
    dependencies (api/deps.py) take them from there. The database engine and the read cache are
    storage's process-wide ones, built from the environment's settings.
    """
    settings = settings or get_settings()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the Prefect client logs every call at INFO
    app = FastAPI(
        title="LLM Marketplace — Publishing API",
        version=health.VERSION,
        description="Providers publish LLM services; each publication is a Prefect flow run.",
        lifespan=lifespan,
        dependencies=[Depends(refuse_nul_characters)],
    )
    app.state.settings = settings
    install_error_handlers(app)
    install_security_document(app)  # bearer auth per operation in /openapi.json
    install_observability(app, settings)  # JSON logs, request ids, HTTP metrics
    app.state.rate_limiter = PublishRateLimiter(settings)
    app.add_middleware(IdempotencyMiddleware)
    install_method_check(app)  # 405 with Allow for a known path asked with another method
    app.include_router(metrics.router)  # GET /metrics, unauthenticated: internal network only
    app.include_router(health.router)
    app.include_router(health.router, prefix=API_PREFIX, include_in_schema=False)
    app.include_router(search.router, prefix=API_PREFIX)  # before /services/{service_id}
    app.include_router(usage.router, prefix=API_PREFIX)
    app.include_router(statements.router, prefix=API_PREFIX)
    app.include_router(service_health.router, prefix=API_PREFIX)
    app.include_router(services.router, prefix=API_PREFIX)
    app.include_router(versions.router, prefix=API_PREFIX)
    app.include_router(approvals.router, prefix=API_PREFIX)
    app.include_router(events.router, prefix=API_PREFIX)
    app.include_router(schemas.router, prefix=API_PREFIX)
    app.include_router(webhooks.router, prefix=API_PREFIX)
    app.include_router(audit.router, prefix=API_PREFIX)
    app.include_router(consumers.router, prefix=API_PREFIX)
    app.include_router(subscriptions.router, prefix=API_PREFIX)
    app.include_router(credentials.router, prefix=API_PREFIX)
    return app


app = create_app()
