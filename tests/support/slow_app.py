"""The API with one extra, test-only route that takes its time: for graceful-shutdown tests.

Served by uvicorn as a factory (`tests.support.slow_app:create_slow_app`); the production app
has no such route.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from api.app import create_app

SLOW_PATH = "/test-only/slow"


def create_slow_app() -> FastAPI:
    """create_app() plus GET /test-only/slow?seconds=N, which answers 200 after N seconds."""
    app = create_app()

    @app.get(SLOW_PATH, include_in_schema=False)
    async def slow(seconds: float = 1.0) -> dict[str, float]:
        await asyncio.sleep(seconds)
        return {"slept": seconds}

    return app
