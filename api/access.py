"""Who may see and change which service.

- Live services (active, deprecated) are the public catalogue: anyone may read them.
- Everything else about a service (its status report, versions, history, a service that is not
  live) is for the provider that owns it, governance and admin. To anyone else a service they
  may not see does not exist (404), so ids of unpublished services leak nothing.
- Changes are for the owning provider and admin; governance decides approvals (api/routes/approvals.py).
- A provider's token subject is its provider id: it publishes only as itself.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from api.auth import Principal, Role
from core.domain import LIVE
from core.errors import ForbiddenError, NotFoundError, UnauthorizedError
from storage.repositories.services import Actor, ServiceFilter

LIVE_STATUSES = tuple(sorted(s.value for s in LIVE))


def actor_for(principal: Principal, request: Request) -> Actor:
    """The audit actor: who, in which role, from which address and client.

    The address is the peer's; behind a proxy, run uvicorn with --proxy-headers and
    --forwarded-allow-ips so the peer is the client rather than the proxy.
    """
    ip = request.client.host if request.client else None
    return Actor(principal.subject, principal.role.value, ip, request.headers.get("user-agent"))


def can_read(principal: Principal | None, provider_id: str, status: str) -> bool:
    if status in LIVE_STATUSES:
        return True
    return principal is not None and (principal.is_staff or principal.owns(provider_id))


def require_readable(principal: Principal | None, service_id: str, provider_id: str, status: str) -> None:
    """404 for a service the caller may not see (the same answer as for a missing one)."""
    if not can_read(principal, provider_id, status):
        raise NotFoundError(f"service {service_id} not found")


def require_internals(principal: Principal | None, service_id: str, provider_id: str, status: str) -> Principal:
    """Publishing details (status report, versions, history) are for the owner and staff."""
    require_readable(principal, service_id, provider_id, status)
    if principal is None:
        raise UnauthorizedError("a bearer token is required to see a service's publishing details")
    if not (principal.is_staff or principal.owns(provider_id)):
        raise ForbiddenError(
            f"only provider {provider_id!r}, governance or admin may see the publishing details of {service_id}"
        )
    return principal


def require_change(principal: Principal, service_id: str, provider_id: str, status: str) -> None:
    """Only the owning provider and admin change a service."""
    require_readable(principal, service_id, provider_id, status)
    if not (principal.role is Role.ADMIN or principal.owns(provider_id)):
        raise ForbiddenError(f"only provider {provider_id!r} or an admin may change service {service_id}")


def require_publish_as(principal: Principal, spec: dict[str, Any]) -> None:
    """A provider publishes only under its own provider id; admin may publish for any provider."""
    provider = spec.get("provider")
    provider_id = provider.get("id") if isinstance(provider, dict) else None
    if principal.role is Role.ADMIN or not isinstance(provider_id, str):
        return  # a missing or malformed provider id is the schema check's to report
    if principal.subject != provider_id:
        raise ForbiddenError(
            f"provider {principal.subject!r} may not publish as provider {provider_id!r}",
            [{"pointer": "/provider/id", "message": f"must be {principal.subject!r}, the token's subject"}],
        )


def listing_filter(principal: Principal | None, requested: ServiceFilter) -> ServiceFilter:
    """Narrow a service listing to what the caller may see."""
    if principal is not None and principal.is_staff:
        return requested
    if principal is not None and principal.role is Role.PROVIDER:
        if requested.provider_id not in (None, principal.subject):
            raise ForbiddenError(
                "a provider lists only its own services; search the catalogue for others'",
                [{"pointer": "provider", "message": f"must be {principal.subject!r} or omitted"}],
            )
        return ServiceFilter(status=requested.status, category=requested.category, provider_id=principal.subject)
    # Consumers and anonymous callers see the catalogue: live services only.
    statuses = LIVE_STATUSES if requested.status is None else tuple(s for s in LIVE_STATUSES if s == requested.status)
    return ServiceFilter(status=None, category=requested.category, provider_id=requested.provider_id, statuses=statuses)
