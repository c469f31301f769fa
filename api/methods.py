"""405 Method Not Allowed, with `Allow`, decided in one place for every route.

Starlette answers 405 only when no route takes both the path and the method, so a parametrised
route that takes the method wins over a fixed path that does not: `GET /api/v1/services/search`
reached `GET /services/{service_id}` and answered 404 for a service called "search". Here a path
that is some route's fixed path (no parameters) is answered 405 unless one of that path's routes
takes the method, before routing. (No parametrised route of this API shadows another
parametrised one, so fixed paths are the only case.)

The 405 Starlette raises itself (a parametrised path with a method none of its routes takes)
names only the first route it tried in `Allow`; its handler here names every method of the path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request, routing
from fastapi.responses import JSONResponse
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response


def install_method_check(app: FastAPI) -> None:
    """The fixed-path check before routing, and the one 405 answer for both cases."""
    app.add_middleware(MethodCheckMiddleware, routes=app.router.routes)
    app.add_exception_handler(405, _routed_405)


def method_not_allowed(method: str, allowed: Iterable[str]) -> JSONResponse:
    """405 in the API's error shape, with `Allow` (RFC 9110 15.5.6)."""
    methods = ", ".join(sorted(allowed))
    message = f"{method} is not allowed on this path; it allows {methods}"
    return error_response(405, "method_not_allowed", message, headers={"Allow": methods})


def every_route(routes: Sequence[BaseRoute]) -> list[Any]:
    """Each route with its full path, `methods` and `matches`: FastAPI 0.150 keeps an included
    router as one route of the app (walked with its public `iter_route_contexts`); earlier
    versions copied the included routes into the app's list."""
    walk = getattr(routing, "iter_route_contexts", None)
    return list(walk(routes)) if walk is not None else list(routes)


def allowed_methods(routes: Sequence[BaseRoute], scope: Scope) -> set[str]:
    """Every method some route takes at the request's path (whatever the request's own method)."""
    allowed: set[str] = set()
    for route in every_route(routes):
        methods = getattr(route, "methods", None)
        if methods and route.matches(scope)[0] is not Match.NONE:
            allowed |= methods
    return allowed


async def _routed_405(request: Request, _exc: Exception) -> JSONResponse:
    return method_not_allowed(request.method, allowed_methods(request.app.router.routes, request.scope))


class MethodCheckMiddleware:
    """Answers 405 for a fixed route path asked with a method none of its routes takes."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes
        self._fixed: dict[str, frozenset[str]] | None = None  # built on first use: every route is known then

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            allowed = self._fixed_paths().get(_route_path(scope))
            if allowed is not None and scope["method"] not in allowed:
                await method_not_allowed(scope["method"], allowed)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _fixed_paths(self) -> dict[str, frozenset[str]]:
        if self._fixed is None:
            fixed: dict[str, set[str]] = {}
            for route in every_route(self.routes):
                path, methods = getattr(route, "path", None), getattr(route, "methods", None)
                if isinstance(path, str) and methods and "{" not in path:
                    fixed.setdefault(path, set()).update(methods)
            self._fixed = {path: frozenset(methods) for path, methods in fixed.items()}
        return self._fixed


def _route_path(scope: Scope) -> str:
    """The path routes are matched against: without the root path a proxy mounted the app under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
