"""`python -m gateway`: one gateway process on uvicorn with uvloop and httptools."""

from __future__ import annotations

from typing import Any

import uvicorn

from core.logging import configure_logging, resolve_format
from core.settings import Environment, Settings
from gateway.app import GatewayApp


def main() -> None:
    settings = Settings()
    development = settings.environment is Environment.DEVELOPMENT
    configure_logging(settings.log_level, resolve_format(settings.log_format, development))
    workers = settings.gateway.workers
    app: Any = GatewayApp(settings) if workers == 1 else "gateway.app:from_environment"
    uvicorn.run(
        app,
        factory=workers > 1,
        workers=workers if workers > 1 else None,
        host=settings.gateway.host,
        port=settings.gateway.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # the gateway uses no client address; skip the middleware on every call
        server_header=False,
        date_header=False,
        log_config=None,
        timeout_graceful_shutdown=int(settings.api.shutdown_grace_seconds),
    )


if __name__ == "__main__":
    main()
