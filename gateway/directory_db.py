"""The directory the gateway runs with: the marketplace database, held in memory, dropped on change.

- Services: all of them past the pipeline, loaded whole (names for `model`, lifecycle answers)
  and reloaded when one changes.
- Keys: read once per key id (`api_keys.load_key`), checked against the presented secret on
  every call (an HMAC: microseconds), refusals (revoked, expired, blocked) decided per call.
- Access: per consumer and service (`access.load_access`: the active subscription's limits, the
  provider credential, the signing secrets).

Changes arrive through `storage.consumption_feed.ChangeFeed` (Redis messages within
milliseconds, the database's change counters as the safety net): the entries they name are
dropped and read again on next use. A load that raced a change is used once and not kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from core import keys as key_format
from core.settings import ConsumptionSettings
from gateway.directory import Access, ApiKey, Plan, Rates, ServiceRoute, Subscription
from gateway.errors import GatewayError
from storage.consumption_feed import (
    SERVICE_GENERATION_PREFIX,
    ChangeFeed,
    access_name,
    consumer_name,
    key_name,
    service_name,
)
from storage.encryption import box_for
from storage.models import Service
from storage.repositories import access as access_repo
from storage.repositories import api_keys, routing, service_subscriptions
from storage.repositories.api_keys import KeyRecord
from storage.repositories.health import MONITOR
from storage.repositories.routing import Suspension

log = logging.getLogger("marketplace.gateway.directory")
T = TypeVar("T")
REMEMBERED = 100_000  # keys (and access entries) kept before starting over


def rates_of(pricing: dict[str, Any]) -> Rates:
    """Per-unit prices from a spec's `pricing` (`price` per `per` units), as Decimals."""
    unit_prices: dict[str, Decimal] = {}
    for rate in pricing.get("rates") or []:
        unit_prices[str(rate.get("unit"))] = Decimal(str(rate.get("price", 0))) / Decimal(int(rate.get("per") or 1))
    return Rates(
        currency=str(pricing.get("currency") or "USD"),
        per_request=unit_prices.get("request", Decimal(0)),
        per_input_token=unit_prices.get("input_tokens", Decimal(0)),
        per_output_token=unit_prices.get("output_tokens", Decimal(0)),
    )


def route_of(service: Service, suspension: Suspension | None, health_retry_after: int = 60) -> ServiceRoute:
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
        suspension_reason=suspension.reason if suspension else None,
        health_retry_after=health_retry_after if suspension and suspension.actor == MONITOR.id else None,
        published_at=service.published_at,
    )


def api_key_of(record: KeyRecord) -> ApiKey:
    return ApiKey(
        id=record.key_id,
        consumer_id=record.consumer_id,
        allowed_services=record.service_ids,
        requests_per_minute=record.requests_per_minute,
        refused=record.refusal(datetime.now(UTC)) if record.revoked_at or record.consumer_status != "active" else None,
        expires_at=record.expires_at.timestamp() if record.expires_at else None,
    )


def access_of(record: access_repo.AccessRecord | None, service_id: str) -> Access:
    if record is None or record.grant is None:
        return Access(subscription=None)
    g = record.grant
    plan = Plan(
        g.plan_name,
        g.requests_per_minute,
        g.key_requests_per_minute,
        g.requests_per_month,
        g.tokens_per_month,
        g.max_tokens_per_request,
    )
    credential = (record.credential.header_name, record.credential.header_value) if record.credential else None
    return Access(Subscription(g.subscription_id, service_id, plan), credential, record.signing_secrets)


class DatabaseDirectory:
    def __init__(
        self,
        engine: Engine,
        consumption: ConsumptionSettings,
        refresh_seconds: float,
        redis_url: str | None,
        health_retry_after: int = 60,
    ) -> None:
        self.engine = engine
        self.pepper = consumption.key_pepper.get_secret_value()
        self.box = box_for(consumption)
        self.refresh_seconds = refresh_seconds
        self.health_retry_after = health_retry_after  # Retry-After of a service the health monitor suspended
        self._services: dict[str, ServiceRoute] = {}
        self._models: dict[str, ServiceRoute] = {}
        self._fingerprint: Any = None
        self._keys: dict[str, tuple[KeyRecord, ApiKey] | None] = {}
        self._access: dict[tuple[str, str], Access] = {}
        self._generation = 0  # moves with every change heard; a load that saw it move is not kept
        self._lock = threading.Lock()
        self._services_changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.feed = ChangeFeed(
            engine, self._on_change, redis_url=redis_url, poll_seconds=consumption.change_poll_seconds
        )

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.feed.start)
        await asyncio.to_thread(self._reload_services, True)
        self._task = self._loop.create_task(self._follow_services())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self.feed.close)

    # --- keys and access -----------------------------------------------------------------------

    async def key(self, secret: str) -> ApiKey | None:
        parsed = key_format.parse_key(secret)
        if parsed is None:
            return None
        key_id, presented = parsed
        if key_id in self._keys:
            found = self._keys[key_id]
        else:
            generation = self._generation
            record = await self._read(self._load_key, key_id)
            found = (record, api_key_of(record)) if record is not None else None
            self._keep(self._keys, key_id, found, generation)
        if found is None or not found[0].matches(self.pepper, presented):
            return None
        return found[1]

    async def _read(self, load: Callable[..., T], *args: Any) -> T:
        """A database read off the event loop; 503 in our error shape when the database is away."""
        try:
            return await asyncio.to_thread(load, *args)
        except DBAPIError as exc:
            log.warning("directory read failed: %s", type(exc).__name__)
            raise GatewayError(
                503,
                "directory_unavailable",
                "the marketplace cannot check this key now; retry shortly",
                headers={"Retry-After": "1"},
            ) from exc

    def _load_key(self, key_id: str) -> KeyRecord | None:
        with Session(self.engine) as session:
            return api_keys.load_key(session, key_id)

    async def access(self, key: ApiKey, route: ServiceRoute) -> Access:
        if not key.may_call(route.id):
            return Access(subscription=None)
        cache_key = (key.consumer_id, route.id)
        found = self._access.get(cache_key)
        if found is None:
            generation = self._generation
            found = await self._read(self._load_access, key.consumer_id, route.id)
            self._keep(self._access, cache_key, found, generation)
        return found

    def _load_access(self, consumer_id: str, service_id: str) -> Access:
        with Session(self.engine) as session:
            return access_of(access_repo.load_access(session, consumer_id, service_id, self.box), service_id)

    async def subscribed(self, key: ApiKey) -> list[str]:
        return await self._read(self._subscribed, key.consumer_id)

    def _subscribed(self, consumer_id: str) -> list[str]:
        wanted = service_subscriptions.SubscriptionFilter(consumer_id=consumer_id, status=service_subscriptions.ACTIVE)
        with Session(self.engine) as session:
            rows, _ = service_subscriptions.list_subscriptions(session, wanted, 0, 1000)
        return [subscription.service_id for subscription, _ in rows]

    def _keep(self, cache: dict[Any, Any], key: Any, value: Any, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return  # a change arrived while loading: use it this once, read again next time
            if len(cache) >= REMEMBERED:
                cache.clear()
            cache[key] = value

    def _on_change(self, names: frozenset[str] | None) -> None:
        """From the feed's threads: drop what changed (everything, for None)."""
        with self._lock:
            self._generation += 1
            if names is None:
                self._keys, self._access = {}, {}
            else:
                self._drop(names)
        if (names is None or any(n.startswith(SERVICE_GENERATION_PREFIX) for n in names)) and self._loop:
            self._loop.call_soon_threadsafe(self._services_changed.set)

    def _drop(self, names: frozenset[str]) -> None:
        for key_id in [k for k in self._keys if key_name(k) in names]:
            del self._keys[key_id]
        for key_id, found in list(self._keys.items()):
            if found is not None and consumer_name(found[0].consumer_id) in names:
                del self._keys[key_id]
        for consumer_id, service_id in list(self._access):
            if access_name(consumer_id, service_id) in names or service_name(service_id) in names:
                del self._access[(consumer_id, service_id)]

    # --- services ------------------------------------------------------------------------------

    def service(self, service_id: str) -> ServiceRoute | None:
        return self._services.get(service_id)

    def model(self, model: str) -> ServiceRoute | None:
        return self._models.get(model) or self._services.get(model)

    async def _follow_services(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.refresh_seconds):
                    await self._services_changed.wait()
            forced = self._services_changed.is_set()
            self._services_changed.clear()
            try:
                await asyncio.to_thread(self._reload_services, forced)
            except Exception:  # the database is away: keep serving from memory
                log.warning("service refresh failed; serving what is in memory")

    def _reload_services(self, forced: bool) -> None:
        with Session(self.engine) as session:
            fingerprint = routing.fingerprint(session)
            if fingerprint == self._fingerprint and not forced:
                return
            rows = routing.routed_services(session)
            found = routing.suspensions(session, [s.id for s in rows if s.status == "suspended"])
        self._install([route_of(s, found.get(s.id), self.health_retry_after) for s in rows])
        self._fingerprint = fingerprint

    def _install(self, routes: list[ServiceRoute]) -> None:
        models: dict[str, ServiceRoute] = {}
        rank = {"active": 0, "deprecated": 1, "suspended": 2, "retired": 3}
        # a name shared by several services goes to a live one (active before deprecated)
        for route in sorted(routes, key=lambda r: rank.get(r.status, 9), reverse=True):
            for name in route.model_names:
                models[name] = route
        self._services, self._models = {r.id: r for r in routes}, models
