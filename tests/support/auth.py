"""Bearer tokens for tests, signed with the configured (development) secret."""

from __future__ import annotations

from api.auth import Role, issue_token
from core.settings import get_settings


def bearer(sub: str = "acme", role: str | Role = Role.PROVIDER, ttl_seconds: int | None = None) -> dict[str, str]:
    """An `Authorization` header for `sub` acting as `role` (the default is good_spec's provider)."""
    token = issue_token(sub, Role(role), get_settings().auth, ttl_seconds)
    return {"Authorization": f"Bearer {token}"}


def provider(sub: str = "acme") -> dict[str, str]:
    return bearer(sub, Role.PROVIDER)


def governance(sub: str = "gov-1") -> dict[str, str]:
    return bearer(sub, Role.GOVERNANCE)


def admin(sub: str = "root-admin") -> dict[str, str]:
    return bearer(sub, Role.ADMIN)


def consumer(sub: str = "consumer-1") -> dict[str, str]:
    return bearer(sub, Role.CONSUMER)
