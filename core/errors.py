"""Domain errors. Each carries the HTTP status the API maps it to, in one place."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        *,
        total: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.headers = {**self.default_headers(), **(headers or {})}
        # How many problems there were in all, when `details` lists only the first of them.
        self.total = total

    def default_headers(self) -> dict[str, str]:
        return {}


class UnauthorizedError(DomainError):
    status_code = 401
    code = "unauthorized"

    def default_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="marketplace"'}  # RFC 6750


class ForbiddenError(DomainError):
    status_code = 403
    code = "forbidden"


class NotFoundError(DomainError):
    status_code = 404
    code = "not_found"


class ConflictError(DomainError):
    status_code = 409
    code = "conflict"


class DuplicateServiceError(ConflictError):
    code = "duplicate_service"


class InvalidTransitionError(ConflictError):
    code = "invalid_transition"


class SpecValidationError(DomainError):
    status_code = 422
    code = "validation_failed"


class PayloadTooLargeError(DomainError):
    status_code = 413
    code = "payload_too_large"


class RateLimitedError(DomainError):
    status_code = 429
    code = "rate_limited"


class UpstreamUnavailableError(DomainError):
    status_code = 503
    code = "upstream_unavailable"


class ConsumerBlockedError(ForbiddenError):
    code = "consumer_blocked"
