"""Bearer-token authentication and role checks.

Tokens are JWTs carrying `sub` (who), `role` (provider, governance, admin, consumer) and `exp`.
Development signs them with a shared HS256 secret; production verifies RS256 signatures with the
identity provider's public key (a PEM file) or key set (a JWKS file, keys picked by `kid`).
The algorithm is pinned by configuration, never taken from the token: `alg: none` and
HS256-signed-with-the-public-key tokens are refused.

`python -m api.auth --sub acme --role provider` prints a development token.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from core.errors import ForbiddenError, UnauthorizedError
from core.settings import AuthSettings, Settings, get_settings


class Role(StrEnum):
    PROVIDER = "provider"
    GOVERNANCE = "governance"
    ADMIN = "admin"
    CONSUMER = "consumer"


STAFF = frozenset({Role.GOVERNANCE, Role.ADMIN})
VERIFIED_TOKENS_MAX = 10_000  # tokens a verifier remembers as checked (see TokenVerifier)
# The security scheme in the OpenAPI document; operations where a token is optional are declared
# under the second name, which api.openapi rewrites into "bearerAuth, or none" (OpenAPI's `{}`).
BEARER_SCHEME = "bearerAuth"
OPTIONAL_BEARER_SCHEME = "bearerAuthOptional"
# A compact JWS: header, payload and signature, base64url without padding (RFC 7515 7.1).
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
MALFORMED = "malformed token: a bearer token is a JWT of three base64url segments"


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role

    @property
    def is_staff(self) -> bool:
        """Governance and admin see every service."""
        return self.role in STAFF

    def owns(self, provider_id: str) -> bool:
        """A provider's token subject is its provider id."""
        return self.role is Role.PROVIDER and self.subject == provider_id


def issue_token(
    subject: str,
    role: Role,
    settings: AuthSettings,
    ttl_seconds: int | None = None,
    private_key: str | None = None,
    key_id: str | None = None,
) -> str:
    """A signed token for `subject` acting as `role` (RS256 needs the private key)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "role": role.value,
        "iat": now,
        "exp": now + (ttl_seconds or settings.token_ttl_seconds),
    }
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_algorithm == "RS256":
        if not private_key:
            raise ValueError("RS256 tokens are signed with the identity provider's private key (--private-key)")
        headers = {"kid": key_id} if key_id else None
        return jwt.encode(claims, private_key, algorithm="RS256", headers=headers)
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


class TokenVerifier:
    """Checks signature, expiry, issuer and audience with keys loaded once per configuration.

    A client sends the same token with every request (a provider polling its status several
    times a second), and checking it again costs more CPU than the rest of a cached status
    read. So a token that passed is remembered with its expiry, keyed by the whole token
    string: any other bytes (a changed claim, signature or header) are a different key and
    are checked in full; a remembered token is still refused once it expires. The memory is
    per verifier, so new keys (a rotated JWKS or secret) start with none.
    """

    def __init__(self, settings: AuthSettings, remember: int = VERIFIED_TOKENS_MAX) -> None:
        self._settings = settings
        self._remember = remember
        self._verified: dict[str, tuple[Principal, float]] = {}  # token -> (principal, refused after)
        self._algorithm = settings.jwt_algorithm
        self._key: Any = None
        self._keyset: jwt.PyJWKSet | None = None
        if self._algorithm == "HS256":
            self._key = settings.jwt_secret.get_secret_value()
        elif settings.jwks_file:
            self._keyset = jwt.PyJWKSet.from_json(Path(settings.jwks_file).read_text())
        elif settings.jwt_public_key_file:
            self._key = Path(settings.jwt_public_key_file).read_text()

    def decode(self, token: str) -> Principal:
        known = self._verified.get(token)
        if known is not None:
            principal, refused_after = known
            if time.time() <= refused_after:
                return principal
            del self._verified[token]
        principal, expires_at = self._verify(token)
        if len(self._verified) >= self._remember:  # many clients: start over rather than grow
            self._verified.clear()
        self._verified[token] = (principal, expires_at + self._settings.leeway_seconds)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        if not _JWT_SHAPE.fullmatch(token):
            raise UnauthorizedError(MALFORMED)
        key = self._signing_key(token)
        options: jwt.types.Options = {"require": ["sub", "role", "exp"]}
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[self._algorithm],
                options=options,
                issuer=self._settings.jwt_issuer,
                audience=self._settings.jwt_audience,
                leeway=self._settings.leeway_seconds,
            )
        except jwt.ExpiredSignatureError as exc:
            raise UnauthorizedError("the bearer token has expired") from exc
        except jwt.InvalidSignatureError as exc:
            raise UnauthorizedError(f"the bearer token is invalid: {exc}") from exc
        except jwt.DecodeError as exc:
            # The right shape, but a segment is not base64url of JSON: say so, not how the decoder failed.
            raise UnauthorizedError(MALFORMED) from exc
        except jwt.InvalidTokenError as exc:
            raise UnauthorizedError(f"the bearer token is invalid: {exc}") from exc
        try:
            role = Role(claims["role"])
        except (ValueError, TypeError) as exc:
            allowed = ", ".join(r.value for r in Role)
            raise ForbiddenError(f"the token's role {claims['role']!r} is not one of: {allowed}") from exc
        return Principal(subject=str(claims["sub"]), role=role), float(claims["exp"])

    def _signing_key(self, token: str) -> Any:
        if self._keyset is None:
            return self._key
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError as exc:
            raise UnauthorizedError(MALFORMED) from exc
        keys = self._keyset.keys
        if kid is None and len(keys) == 1:
            return keys[0]
        for key in keys:
            if key.key_id == kid:
                return key
        raise UnauthorizedError(f"the bearer token's key id {kid!r} is not in the configured key set")


_verifiers: dict[tuple[Any, ...], TokenVerifier] = {}


def verifier(settings: AuthSettings) -> TokenVerifier:
    """The verifier for these settings, built once; key files are re-read when they change on disk."""
    files = tuple(
        (str(path), path.stat().st_mtime_ns if path.exists() else None)
        for path in (settings.jwks_file, settings.jwt_public_key_file)
        if path is not None
    )
    key = (
        settings.jwt_algorithm,
        settings.jwt_secret.get_secret_value(),
        settings.jwt_issuer,
        settings.jwt_audience,
        settings.leeway_seconds,
        files,
    )
    found = _verifiers.get(key)
    if found is None:
        if len(_verifiers) >= 8:  # keys rotated many times: start over rather than grow
            _verifiers.clear()
        found = _verifiers[key] = TokenVerifier(settings)
    return found


def decode_token(token: str, settings: AuthSettings) -> Principal:
    """Verify signature and expiry and read subject and role."""
    return verifier(settings).decode(token)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def optional_principal(request: Request) -> Principal | None:
    """The caller, or None when anonymous; a token that is present must be valid."""
    token = _bearer(request)
    if token is None:
        return None
    settings: Settings = request.app.state.settings  # the app's (api/app.py)
    principal = decode_token(token, settings.auth)
    request.state.principal = principal
    return principal


class _BearerScheme(HTTPBearer):
    """A JWT bearer token as a FastAPI dependency. Being an HTTPBearer, it is what declares the
    API's security scheme in the OpenAPI document, and each operation that depends on it: the
    dependency a route takes is the one source of its documented security. Its own reading of
    the header (`optional_principal`) replaces HTTPBearer's, which would pass malformed headers
    as anonymous.

    Async on purpose: verifying a token is a few microseconds of CPU, and a sync dependency would
    cost a hop to the thread pool and back.
    """

    def __init__(self, scheme_name: str) -> None:
        description = "A JWT with `sub`, `role` and `exp` (`python -m api.auth --sub <id> --role <role>`)."
        super().__init__(bearerFormat="JWT", scheme_name=scheme_name, description=description, auto_error=False)


class OptionalBearer(_BearerScheme):
    """The caller, or None when anonymous; a token that is present must be valid."""

    def __init__(self) -> None:
        super().__init__(OPTIONAL_BEARER_SCHEME)

    async def __call__(self, request: Request) -> Principal | None:  # type: ignore[override]
        return optional_principal(request)


class RoleBearer(_BearerScheme):
    """Only a bearer of one of `roles`: 401 without a valid token, 403 with another role."""

    def __init__(self, roles: Iterable[Role]) -> None:
        super().__init__(BEARER_SCHEME)
        self.roles = tuple(roles)

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        principal = optional_principal(request)
        if principal is None:
            raise UnauthorizedError("a bearer token is required (Authorization: Bearer <token>)")
        if principal.role not in self.roles:
            allowed = ", ".join(r.value for r in self.roles)
            raise ForbiddenError(f"role {principal.role.value!r} may not do this; needs one of: {allowed}")
        return principal


maybe_principal = OptionalBearer()


def require_roles(*roles: Role) -> RoleBearer:
    """A dependency admitting only bearers of one of `roles`."""
    return RoleBearer(roles)


MaybePrincipal = Annotated[Principal | None, Depends(maybe_principal)]
AnyRole = Annotated[Principal, Depends(require_roles(*Role))]
ProviderOrAdmin = Annotated[Principal, Depends(require_roles(Role.PROVIDER, Role.ADMIN))]
Staff = Annotated[Principal, Depends(require_roles(Role.GOVERNANCE, Role.ADMIN))]
Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]


def main() -> None:
    """Print a development token."""
    parser = argparse.ArgumentParser(description="Issue a bearer token for the configured algorithm.")
    parser.add_argument("--sub", required=True, help="subject: a provider id, or a user id")
    parser.add_argument("--role", required=True, choices=[r.value for r in Role])
    parser.add_argument("--ttl", type=int, default=None, help="lifetime in seconds")
    parser.add_argument("--private-key", type=Path, default=None, help="RS256: PEM private key file")
    parser.add_argument("--kid", default=None, help="RS256: key id put in the token header")
    args = parser.parse_args()
    private_key = args.private_key.read_text() if args.private_key else None
    print(issue_token(args.sub, Role(args.role), get_settings().auth, args.ttl, private_key, args.kid))


if __name__ == "__main__":
    main()
