"""The directory the gateway runs with: services from the marketplace database, keys from a key source.

Services are loaded whole into memory and reloaded when the database's services change (a cheap
fingerprint query polled every `directory_refresh_seconds`). Keys come from a `KeySource`, asked
once per secret and then answered from memory until a change is announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from gateway.directory import ApiKey, Rates, ServiceRoute
from storage.models import Service
from storage.repositories import routing

log = logging.getLogger("marketplace.gateway.directory")
KEYS_REMEMBERED = 100_000


class KeySource(Protocol):
    """Where keys are looked up (by the SHA-256 of the secret) and headers for providers come from."""

    def load(self, secret_hash: str) -> ApiKey | None: ...

    def upstream_headers(self, route: ServiceRoute, key: ApiKey, request_id: str) -> dict[str, str]: ...

    def version(self) -> Any:
        """Anything that changes when a key, consumer or subscription changes."""


def rates_of(pricing: dict[str, Any]) -> Rates:
    """Per-unit prices from a spec's `pricing` (`price` per `per` units), as Decimals."""
    unit_prices: dict[str, Decimal] = {}
    for rate in pricing.get("rates") or []:
        price = Decimal(str(rate.get("price", 0))) / Decimal(int(rate.get("per") or 1))
        unit_prices[str(rate.get("unit"))] = price
    return Rates(
        currency=str(pricing.get("currency") or "USD"),
        per_request=unit_prices.get("request", Decimal(0)),
        per_input_token=unit_prices.get("input_tokens", Decimal(0)),
        per_output_token=unit_prices.get("output_tokens", Decimal(0)),
    )


def route_of(service: Service, suspension_reason: str | None) -> ServiceRoute:
    spec = service.spec or {}
    return ServiceRoute(
        id=service.id,
        name=service.name,
        version=service.version,
        provider_id=service.provider_id,
        status=service.status,
        base_url=str((spec.get("endpoint") or {}).get("url", "")),
        rates=rates_of(spec.get("pricing") or {}),
        deprecated_at=service.deprecated_at,
        sunset_at=service.sunset_at,
        suspension_reason=suspension_reason,
        published_at=service.published_at,
    )


class DatabaseDirectory:
    """Services from the database, keys from `keys`; both in memory, refreshed on change."""

    def __init__(self, engine: Engine, keys: KeySource, refresh_seconds: float) -> None:
        self.engine = engine
        self.keys = keys
        self.refresh_seconds = refresh_seconds
        self._services: dict[str, ServiceRoute] = {}
        self._models: dict[str, ServiceRoute] = {}
        self._keys: dict[str, ApiKey | None] = {}
        self._fingerprint: Any = None
        self._key_version: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self._reload)
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def key(self, secret: str) -> ApiKey | None:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        if digest in self._keys:
            return self._keys[digest]
        found = await asyncio.to_thread(self.keys.load, digest)
        if len(self._keys) >= KEYS_REMEMBERED:
            self._keys.clear()
        self._keys[digest] = found
        return found

    def service(self, service_id: str) -> ServiceRoute | None:
        return self._services.get(service_id)

    def model(self, model: str) -> ServiceRoute | None:
        return self._models.get(model) or self._services.get(model)

    def upstream_headers(self, route: ServiceRoute, key: ApiKey, request_id: str) -> dict[str, str]:
        return self.keys.upstream_headers(route, key, request_id)

    def forget_keys(self) -> None:
        """A key, consumer or subscription changed: resolve every key again on its next use."""
        self._keys = {}

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await asyncio.to_thread(self._reload)
            except Exception:  # the database is away: keep serving from memory
                log.warning("directory refresh failed; serving what is in memory", exc_info=True)

    def _reload(self) -> None:
        version = self.keys.version()
        if version != self._key_version:
            self._key_version = version
            self.forget_keys()
        with Session(self.engine) as session:
            fingerprint = routing.fingerprint(session)
            if fingerprint == self._fingerprint:
                return
            rows = routing.routed_services(session)
            suspended = [s.id for s in rows if s.status == "suspended"]
            reasons = routing.suspension_reasons(session, suspended)
        self._install([route_of(s, reasons.get(s.id)) for s in rows])
        self._fingerprint = fingerprint

    def _install(self, routes: list[ServiceRoute]) -> None:
        services = {r.id: r for r in routes}
        models: dict[str, ServiceRoute] = {}
        # a name shared by several services goes to a live one (active before deprecated)
        rank = {"active": 0, "deprecated": 1, "suspended": 2, "retired": 3}
        for route in sorted(routes, key=lambda r: rank.get(r.status, 9), reverse=True):
            for name in route.model_names:
                models[name] = route
        self._services, self._models = services, models
