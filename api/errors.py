"""Every error leaves the API in one shape: {"error": {"code", "message", "details": [...]}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import DomainError

log = logging.getLogger("marketplace.api")


class ErrorDetail(BaseModel):
    pointer: str = Field(default="", description="JSON pointer into the request body (or the parameter name).")
    message: str
    code: str | None = None


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] = []
    total: int | None = Field(
        default=None,
        description="How many problems were found in all; present only when `details` lists just the first of them.",
    )


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    total: int | None = None,
) -> JSONResponse:
    details_out = [ErrorDetail(**d) for d in details or []]
    body = ErrorResponse(error=ErrorBody(code=code, message=message, details=details_out, total=total))
    return JSONResponse(status_code=status, content=body.model_dump(exclude_none=True), headers=headers)


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers, exc.total)


async def _request_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"pointer": "/" + "/".join(str(p) for p in err["loc"]), "message": err["msg"], "code": err["type"]}
        for err in exc.errors()
    ]
    return error_response(422, "validation_failed", "request parameters are invalid", details)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, f"http_{exc.status_code}", str(exc.detail), headers=dict(exc.headers or {}))


async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    """The database refused or dropped the connection (restart, failover, connection limit): retryable."""
    log.warning("database unavailable: %s", exc)
    return error_response(
        503, "database_unavailable", "the database is unavailable; retry shortly", headers={"Retry-After": "1"}
    )


async def _unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors and framework errors to the one error body."""
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected_error)
