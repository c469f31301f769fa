"""The gateway's ASGI application: a path switch in front of the handlers, no framework.

Built once per process from explicit settings: the directory (services from the database, keys
from the key source), the limits (Redis or in-process), one aiohttp session, the usage hand-off
and the usage writer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from typing import Any

from opentelemetry.trace import SpanKind
from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from core import telemetry
from core.gc_pauses import freeze_startup_objects
from core.settings import Settings
from gateway import metrics, routes
from gateway.asgi import Receive, Scope, Send, send_whole
from gateway.directory import AccessDirectory
from gateway.directory_db import DatabaseDirectory
from gateway.errors import GatewayError, not_found
from gateway.handoff import Handoff
from gateway.journal import Journal, rotate_forever
from gateway.limits import Limits
from gateway.openai_compat import ROUTES
from gateway.proxy import Call, Gateway
from gateway.resp import RespClient
from gateway.upstream import Upstream
from gateway.writer import UsageWriter
from storage.database import build_engine

log = logging.getLogger("marketplace.gateway")
INVOKE = re.compile(r"^/api/v1/services/([^/]+)/invoke$")
WRITER_REDIS_TIMEOUT = 10.0
REDIS_CONNECTIONS = 64
SWITCH_INTERVAL_SECONDS = 0.001


def redis_client(url: str, timeout: float) -> Redis:
    """A client whose failures reach the fail-open logic at once (no retries inside it). Its pool is
    bounded and blocking: a burst of calls waits for a connection (up to the timeout) rather than
    opening one per call, and never fails for want of one."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_CONNECTIONS,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return Redis(connection_pool=pool)


class GatewayApp:
    """ASGI entry point; `settings` are read once by the process's entry point and passed in."""

    def __init__(self, settings: Settings, directory: AccessDirectory | None = None) -> None:
        self.settings = settings
        self._directory = directory
        self.gw: Gateway | None = None
        self.writer: UsageWriter | None = None
        self._closers: list[Any] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if telemetry.STATE.enabled:
            await self._traced(scope, receive, send)
            return
        call = await self._route(scope, receive, send)
        if call is not None:
            metrics.observe(call.route_name, call.status, call.started, call.ttfb_ms, call.error)

    async def _traced(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The call as a server span (continuing a caller's traceparent); the provider call is its child."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        with telemetry.tracer().start_as_current_span(
            f"gateway {scope['method']}", context=telemetry.extract(headers), kind=SpanKind.SERVER
        ) as span:
            call = await self._route(scope, receive, send)
            if call is not None:
                metrics.observe(call.route_name, call.status, call.started, call.ttfb_ms, call.error)
                span.update_name(f"gateway {call.route_name}")
                span.set_attribute("request_id", call.correlation_id)
                span.set_attribute("marketplace.call_id", call.request_id)
                span.set_attribute("http.response.status_code", call.status)
                if call.error is not None:
                    span.set_attribute("error.type", call.error)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> Call | None:
        path, method, gw = scope["path"], scope["method"], self.gw
        assert gw is not None
        if method == "POST" and path in ROUTES:
            return await routes.openai(gw, scope, receive, send, path)
        if method == "POST" and (match := INVOKE.match(path)):
            return await routes.invoke(gw, scope, receive, send, match.group(1))
        if method == "GET" and path == "/v1/models":
            return await routes.models(gw, scope, send)
        if method == "GET" and path in ("/health", "/ready"):
            await send_whole(send, 200, b'{"status":"ok"}', {})
        elif method == "GET" and path == "/metrics":
            await metrics.serve(scope, send)
        else:
            error = not_found(f"no route {method} {path}") if path in ROUTES or INVOKE.match(path) is None else None
            error = error or GatewayError(405, "method_not_allowed", f"{method} is not allowed on {path}")
            await send_whole(send, error.status, error.body(), {})
        return None

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("gateway start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        s = self.settings
        telemetry.configure_tracing(s.telemetry, "marketplace-gateway")
        g = s.gateway
        url = g.redis_url or s.cache.redis_url
        redis = RespClient(url, g.redis_timeout_seconds) if url else None
        engine = build_engine(s.database.url, pool_size=2, max_overflow=2)
        directory = self._directory or DatabaseDirectory(
            engine, s.consumption, g.directory_refresh_seconds, s.cache.redis_url, s.health.interval_seconds
        )
        await directory.start()
        limits = Limits(redis, g.redis_retry_seconds)
        journal = Journal(g.journal_dir, g.journal_fsync)
        upstream = Upstream(g)
        await upstream.open()
        self.gw = Gateway(g, directory, limits, upstream, Handoff(redis, limits, journal))
        rotation = asyncio.get_running_loop().create_task(rotate_forever(journal))
        self._closers = [rotation.cancel]
        if s.usage.inline:
            writer_redis = redis_client(url, WRITER_REDIS_TIMEOUT) if url else None
            self.writer = UsageWriter(engine, writer_redis, journal, s.usage)
            await self.writer.start()
            self._closers += [self.writer.stop, *([writer_redis.aclose] if writer_redis is not None else [])]
        else:
            self._closers.append(journal.rotate)  # a clean stop leaves its segment replayable at once
        self._closers += [upstream.close, directory.close, *([redis.close] if redis is not None else [])]
        self._closers.append(engine.dispose)
        quiet_runtime()

    async def shutdown(self) -> None:
        for close in self._closers:
            try:
                result = close()
                if hasattr(result, "__await__"):
                    await result
            except Exception:
                log.warning("gateway shutdown step failed", exc_info=True)


def quiet_runtime() -> None:
    """Keep the interpreter from stalling calls: the start-up objects (SQLAlchemy, aiohttp, the
    directory) frozen out of the collector's full walks, which took tens of milliseconds each; and
    background threads (the change feed, database reads) handing the GIL back to the event loop
    after 1 ms instead of Python's 5 ms."""
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    freeze_startup_objects()


def from_environment() -> GatewayApp:
    """The app for a worker process started by uvicorn's supervisor (`python -m gateway` with workers > 1)."""
    return GatewayApp(Settings())
