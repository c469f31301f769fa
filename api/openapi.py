"""The API's OpenAPI document: what FastAPI derives, and optional bearer authentication.

FastAPI declares a security scheme for each HTTPBearer dependency and requires it on every
operation that depends on it; it has no way to say "a token is optional". The routes that read a
token when one is sent (public when live, more for the owner and staff) depend on the scheme
named `OPTIONAL_BEARER_SCHEME`, and the document is rewritten once here: such an operation gets
`security: [{"bearerAuth": []}, {}]` (OpenAPI: bearer, or nothing), and the stand-in scheme goes.
Operations with no security dependency (search, health, the schema) declare none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from api.auth import BEARER_SCHEME, OPTIONAL_BEARER_SCHEME

Document = dict[str, Any]


def install_security_document(app: FastAPI) -> None:
    """Make `app.openapi()` (and /openapi.json, /docs) serve the document with optional auth declared."""
    generate: Callable[[], Document] = app.openapi

    def openapi() -> Document:
        if app.openapi_schema is None:
            app.openapi_schema = declare_optional_bearer(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def declare_optional_bearer(document: Document) -> Document:
    """Rewrite the stand-in optional scheme into `[{bearer}, {}]` per operation; returns `document`."""
    schemes = document.get("components", {}).get("securitySchemes", {})
    optional = schemes.pop(OPTIONAL_BEARER_SCHEME, None)
    if optional is None:
        return document
    schemes.setdefault(BEARER_SCHEME, optional)  # the same scheme, when no route requires a token
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and "security" in operation:
                operation["security"] = _rewritten(operation["security"])
    return document


def _rewritten(requirements: list[dict[str, list[str]]]) -> list[dict[str, list[str]]]:
    required = {BEARER_SCHEME: []} in requirements
    kept = [r for r in requirements if OPTIONAL_BEARER_SCHEME not in r]
    if len(kept) == len(requirements) or required:  # nothing optional, or a token is required anyway
        return kept
    return [*kept, {BEARER_SCHEME: []}, {}]
