"""Errors the gateway answers with, in the API's one shape, plus OpenAI's fields for OpenAI clients.

`{"error": {"code", "message", "details"}}` is the marketplace's error body (api/errors.py). The
official OpenAI clients read `error.message`, `error.type` and `error.param`, so the gateway adds
`type` and `param` to the same object: one body both kinds of client understand.
"""

from __future__ import annotations

from typing import Any

import orjson

# HTTP status -> the OpenAI error type clients switch on.
OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    410: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class GatewayError(Exception):
    """A refusal or failure with its HTTP status, stable code, message and extra headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> bytes:
        """The JSON error body."""
        return error_body(self.status, self.code, self.message, self.details, self.extra)


def error_body(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    param = next((d.get("pointer") for d in details or [] if d.get("pointer")), None)
    error: dict[str, Any] = {
        "code": code,
        "message": message,
        "details": details or [],
        "type": OPENAI_TYPES.get(status, "api_error"),
        "param": param,
    }
    error.update(extra or {})
    return orjson.dumps({"error": error})


def unauthorized(message: str) -> GatewayError:
    return GatewayError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="marketplace"'})


def not_found(message: str) -> GatewayError:
    return GatewayError(404, "not_found", message)


def bad_request(message: str, pointer: str = "") -> GatewayError:
    return GatewayError(422, "validation_failed", message, details=[{"pointer": pointer, "message": message}])
