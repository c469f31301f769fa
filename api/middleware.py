"""Request ids, access logs and HTTP metrics, as one pure ASGI middleware around the whole app.

It wraps the app outside Starlette's error middleware, so a request that ends in an unhandled
error is still counted as 500, logged with its request id and answered with X-Request-ID.
Pure ASGI (not BaseHTTPMiddleware): streaming responses pass through untouched and a client
that disconnects cancels the handler as usual.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

from fastapi import FastAPI
from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import IN_PROGRESS, REQUEST_DURATION, REQUESTS
from core import telemetry
from core.logging import bind_request, configure_logging, resolve_format, unbind_request, valid_request_id
from core.settings import Environment, Settings

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"  # no route matched (404): one label value, whatever the path
CANCELLED = 499  # cancelled before answering: client gone, or shutdown grace exceeded (nginx: 499)

access_log = logging.getLogger("marketplace.access")


def install_observability(app: FastAPI, settings: Settings) -> None:
    """Structured logging for the process, and the request middleware as the app's outermost layer."""
    development = settings.environment is Environment.DEVELOPMENT
    configure_logging(settings.log_level, resolve_format(settings.log_format, development))
    telemetry.configure_tracing(settings.telemetry, "marketplace-api")
    build_inner = app.build_middleware_stack

    def build() -> ASGIApp:
        return RequestObservabilityMiddleware(build_inner())

    # add_middleware would place it inside ServerErrorMiddleware, which answers unhandled errors.
    app.build_middleware_stack = build  # type: ignore[method-assign]


class RequestObservabilityMiddleware:
    """Per request: an id (the caller's if sane, else a new uuid4) bound to the log context and
    echoed in X-Request-ID; one access log line; request count and duration by route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope) or str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id
        if telemetry.STATE.enabled:
            await self._traced(scope, receive, send, request_id)
        else:
            await self._handle(scope, receive, send, request_id)

    async def _traced(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """The request as a server span, continuing the caller's trace when it sent a traceparent."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        attributes = {"http.request.method": method, "url.path": str(scope.get("path", "")), "request_id": request_id}
        with telemetry.tracer().start_as_current_span(
            method, context=telemetry.extract(headers), kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            status = await self._handle(scope, receive, send, request_id)
            route = route_template(scope)
            span.update_name(f"{method} {route}")
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> int:
        token = bind_request(request_id, scope)
        started = time.perf_counter()
        status: int | None = None
        header = (_REQUEST_ID_KEY, request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        IN_PROGRESS.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException as exc:
            if status is None:
                status = CANCELLED if isinstance(exc, asyncio.CancelledError) else 500
            raise
        finally:
            IN_PROGRESS.dec()
            _record(scope, status or 500, time.perf_counter() - started)
            unbind_request(token)
        return status or 500


def incoming_request_id(scope: Scope) -> str | None:
    """The caller's X-Request-ID when it is 1-128 characters of [A-Za-z0-9._-]; otherwise None."""
    for key, value in scope.get("headers", ()):
        if key == _REQUEST_ID_KEY:
            candidate = value.decode("latin-1")
            return candidate if valid_request_id(candidate) else None
    return None


def route_template(scope: Scope) -> str:
    """The matched route's full path template (/api/v1/services/{service_id}), never the raw path.

    A route included with a prefix knows only its own part of the template (/services/{service_id}
    on FastAPI 0.150), so the prefix is taken from the request path: the path minus that part
    with the parameters filled in.
    """
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str) or not template:
        return UNMATCHED_ROUTE
    params = scope.get("path_params") or {}
    convertors = getattr(route, "param_convertors", {})
    try:
        rendered = _PARAM.sub(lambda m: _param_text(m.group(1), params, convertors), template)
    except KeyError:
        return template
    path = str(scope.get("path", ""))
    return path[: len(path) - len(rendered)] + template if path.endswith(rendered) else template


_PARAM = re.compile(r"{([^{}:]+)}")


def _param_text(name: str, params: dict[str, Any], convertors: dict[str, Any]) -> str:
    value = params[name]
    convertor = convertors.get(name)
    return str(convertor.to_string(value)) if convertor is not None else str(value)


def _record(scope: Scope, status: int, seconds: float) -> None:
    method = scope["method"] if scope["method"] in _METHODS else "OTHER"
    route = route_template(scope)
    REQUESTS.labels(method, route, str(status)).inc()
    REQUEST_DURATION.labels(method, route).observe(seconds)
    # As received (percent-encoded, no query string): a decoded path could carry a line break.
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else str(scope.get("path", ""))
    client = scope.get("client")
    duration_ms = round(seconds * 1000, 2)
    access_log.info(
        "%s %s %s %.1fms",
        method,
        path,
        status,
        duration_ms,
        extra={
            "method": method,
            "route": route,
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
            "client_ip": client[0] if client else None,
        },
    )
