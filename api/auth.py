"""Bearer-token authentication and role checks.

Tokens are JWTs carrying `sub` (who), `role` (provider, governance, admin, consumer) and `exp`.
`python -m api.auth --sub alice --role governance` prints a development token.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import jwt
from fastapi import Request

from core.errors import ForbiddenError, UnauthorizedError
from core.settings import AuthSettings, get_settings


class Role(StrEnum):
    PROVIDER = "provider"
    GOVERNANCE = "governance"
    ADMIN = "admin"
    CONSUMER = "consumer"


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role


def issue_token(subject: str, role: Role, settings: AuthSettings, ttl_seconds: int | None = None) -> str:
    """A signed token for `subject` acting as `role`."""
    now = int(time.time())
    claims = {"sub": subject, "role": role.value, "iat": now, "exp": now + (ttl_seconds or settings.token_ttl_seconds)}
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=settings.jwt_algorithm)


def decode_token(token: str, settings: AuthSettings) -> Principal:
    """Verify signature and expiry (the algorithm is pinned: `alg: none` and swaps are refused)."""
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=[settings.jwt_algorithm],
            options={"require": ["sub", "role", "exp"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise UnauthorizedError("the bearer token has expired") from exc
    except jwt.InvalidTokenError as exc:
        raise UnauthorizedError(f"the bearer token is invalid: {exc}") from exc
    try:
        role = Role(claims["role"])
    except ValueError as exc:
        raise ForbiddenError(f"unknown role {claims['role']!r}") from exc
    return Principal(subject=str(claims["sub"]), role=role)


def require_roles(*roles: Role) -> Callable[[Request], Principal]:
    """A dependency admitting only bearers of one of `roles`."""

    def dependency(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise UnauthorizedError("a bearer token is required (Authorization: Bearer <token>)")
        principal = decode_token(token.strip(), get_settings().auth)
        if principal.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise ForbiddenError(f"role {principal.role.value!r} may not do this; needs one of: {allowed}")
        return principal

    return dependency


def main() -> None:
    """Print a development token."""
    parser = argparse.ArgumentParser(description="Issue a bearer token signed with the configured secret.")
    parser.add_argument("--sub", required=True, help="subject: user or provider id")
    parser.add_argument("--role", required=True, choices=[r.value for r in Role])
    parser.add_argument("--ttl", type=int, default=None, help="lifetime in seconds")
    args = parser.parse_args()
    print(issue_token(args.sub, Role(args.role), get_settings().auth, args.ttl))


if __name__ == "__main__":
    main()
