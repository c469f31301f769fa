"""What the gateway needs to know about keys, consumers, subscriptions and services, behind one protocol.

The hot path never reads the database: a directory keeps what it resolved in memory and forgets
it when a change is announced (Redis pub/sub) or the database's change counter moves (polled),
so a revoked key stops working on every process within about a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

CALLABLE = frozenset({"active", "deprecated"})


@dataclass(frozen=True, slots=True)
class Plan:
    """The limits a subscription's plan sets (None: no limit of that kind)."""

    name: str
    requests_per_minute: int | None = None
    key_requests_per_minute: int | None = None
    requests_per_month: int | None = None
    tokens_per_month: int | None = None
    max_tokens_per_request: int | None = None


@dataclass(frozen=True, slots=True)
class Subscription:
    """A consumer's active subscription to one service under a plan."""

    id: str
    service_id: str
    plan: Plan


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A resolved API key: whose it is and what it may call."""

    id: str
    consumer_id: str
    allowed_services: frozenset[str] | None = None  # None: every subscribed service
    requests_per_minute: int | None = None  # the key's own limit (None: the plan's per-key limit, if any)
    refused: str | None = None  # why the key may not be used (revoked, consumer blocked)
    expires_at: float | None = None  # epoch seconds (a rotated key's grace ends here too)

    def may_call(self, service_id: str) -> bool:
        return self.allowed_services is None or service_id in self.allowed_services


@dataclass(frozen=True, slots=True)
class Access:
    """What one consumer may do with one service, and how the provider is called for it."""

    subscription: Subscription | None  # None: no active subscription
    credential: tuple[str, str] | None = None  # (header, value) the provider gave the marketplace
    signing_secrets: tuple[str, ...] = ()  # current first


@dataclass(frozen=True, slots=True)
class Rates:
    """A service's prices per single unit (Decimal: money is never a float)."""

    currency: str = "USD"
    per_request: Decimal = Decimal(0)
    per_input_token: Decimal = Decimal(0)
    per_output_token: Decimal = Decimal(0)

    def cost(self, input_tokens: int, output_tokens: int) -> Decimal:
        """The price of one call with this usage."""
        return self.per_request + self.per_input_token * input_tokens + self.per_output_token * output_tokens


@dataclass(frozen=True, slots=True)
class ServiceRoute:
    """Where and how a service is called, and whether it may be."""

    id: str
    name: str
    version: str
    provider_id: str
    status: str
    base_url: str
    rates: Rates = field(default_factory=Rates)
    deprecated_at: datetime | None = None
    sunset_at: datetime | None = None
    suspension_reason: str | None = None
    # Suspended by the health monitor (SLA breached), not by an admin: the service is unavailable
    # for now (503 with Retry-After) rather than refused (403); it comes back by itself.
    health_retry_after: int | None = None
    max_tokens: int | None = None  # the service's own ceiling per request, when it declares one
    published_at: datetime | None = None

    @property
    def model_names(self) -> tuple[str, str]:
        """What `model` may say to choose this service: its name, or provider/name."""
        return self.name, f"{self.provider_id}/{self.name}"


class AccessDirectory(Protocol):
    """Keys, services and access; every lookup answers from memory when it can."""

    async def start(self) -> None:
        """Load what is needed and begin following changes."""

    async def close(self) -> None:
        """Stop following changes."""

    async def key(self, secret: str) -> ApiKey | None:
        """The key with this secret, or None when there is none."""

    def service(self, service_id: str) -> ServiceRoute | None:
        """The service with this id (any status), or None."""

    def model(self, model: str) -> ServiceRoute | None:
        """The service a `model` value names (name, provider/name, or id), or None."""

    async def access(self, key: ApiKey, route: ServiceRoute) -> Access:
        """The key's consumer's access to the service."""

    async def subscribed(self, key: ApiKey) -> list[str]:
        """Ids of the services the key's consumer has an active subscription to (not on the hot path)."""
