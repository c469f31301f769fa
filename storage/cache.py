"""Read cache for per-service entries (documents, status records) and search results: Redis or in-process.

Invalidation is immediate and automatic: a session listener (storage/database.py) collects the
services a transaction changed and, once it commits, moves their generations (and the search
generation) on in Redis, which every process sees. The in-process cache cannot hear other
processes (the worker's flow runs), so it keys entries by a database change counter
(`cache_stamps`) that every such transaction bumps: one primary-key read per lookup.

Search answers are kept as their response bodies, with the time they stop being fresh: past it
(and still under the current token, so no service changed) `get_search` hands them back marked
stale for `search_stale_seconds` more, and the search route refreshes them in the background.

Redis failures never fail a request: the cache degrades to misses and logs. After a failure
Redis is left alone for a couple of seconds (every call a miss, no timeout paid); invalidations
that could not reach it meanwhile are replayed before this process reads from it again.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import redis
from cachetools import TLRUCache
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.settings import CacheSettings, get_settings
from storage.engine import read_change_stamp
from storage.near_cache import NearCache

log = logging.getLogger("marketplace.cache")
SEARCH_GENERATION = "mkt:search:generation"
SERVICE = "service"  # the kind of entry that is a service's document (GET /services/{id})


class Backend(Protocol):
    def get(self, key: str) -> str | None: ...
    def set(self, key: str, value: str, ttl: int) -> None: ...
    def delete(self, keys: list[str]) -> None: ...
    def incr(self, key: str) -> int: ...


class RedisBackend:
    """Shared by every process; short socket timeouts so a sick Redis costs milliseconds, not seconds.

    A failed call opens a short circuit: for `retry_after` seconds every call is a miss without
    touching Redis, so a hung server (timeouts, not refusals) costs one timeout per window rather
    than per request. Generation bumps (invalidations) skipped or failed meanwhile are remembered
    and replayed first when Redis answers again, so entries cached before the outage are never
    served after a change this process made during it.
    """

    def __init__(self, url: str, *, timeout: float = 0.25, retry_after: float = 2.0) -> None:
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
        self._retry_after = retry_after
        self._down_until = 0.0  # monotonic time before which Redis is not tried
        self._missed: set[str] = set()  # generation keys whose bump has not reached Redis
        self._lock = threading.Lock()
        self._on_failure: list[Callable[[], None]] = []

    @property
    def available(self) -> bool:
        """False while the circuit is open after a failure."""
        return time.monotonic() >= self._down_until

    def get(self, key: str) -> str | None:
        value = self._safe(lambda: self._redis.get(key))
        return value.decode() if isinstance(value, bytes) else None

    def set(self, key: str, value: str, ttl: int) -> None:
        self._safe(lambda: self._redis.set(key, value, ex=ttl))

    def delete(self, keys: list[str]) -> None:
        if keys:
            self._safe(lambda: self._redis.delete(*keys))

    def near_cache(self) -> NearCache:
        """This backend's tokens and entries in memory (storage/near_cache.py), reset by any failure."""
        near = NearCache(self._redis)
        self._on_failure.append(near.reset)
        return near

    def publish(self, generation_keys: list[str]) -> None:
        """Tell every process that these generations moved on (a lost message: they read Redis again)."""
        self._safe(lambda: NearCache.publish(self._redis, generation_keys))

    def incr(self, key: str) -> int:
        value = self._safe(lambda: self._redis.incr(key))
        if not isinstance(value, int):
            with self._lock:
                self._missed.add(key)
            return 0
        return value

    def _safe(self, call: Callable[[], Any]) -> Any:
        if not self.available:
            return None
        try:
            self._replay_missed()
            return call()
        except redis.RedisError as exc:
            with self._lock:
                was_up = self.available
                self._down_until = time.monotonic() + self._retry_after
            if was_up:
                log.warning("redis unavailable, serving without cache for %.1f s: %s", self._retry_after, exc)
            for reset in self._on_failure:
                reset()
            return None

    def _replay_missed(self) -> None:
        """Bump the generations whose invalidation did not get through, before anything is read."""
        with self._lock:
            keys = sorted(self._missed)
        if not keys:
            return
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.incr(key)
        pipe.execute()
        NearCache.publish(self._redis, keys)  # other processes' memory learns of them too
        with self._lock:
            self._missed.difference_update(keys)
        log.info("redis is back: replayed %d missed invalidation(s)", len(keys))


class LocalBackend:
    """A bounded, thread-safe TTL map inside this process (least recently used entries go first)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        # Each value is (ttl, text): the entry expires `ttl` seconds after it was set.
        self._data: TLRUCache[str, tuple[float, str]] = TLRUCache(max_entries, _expires, timer=time.monotonic)
        self._lock = threading.Lock()  # cachetools' caches are not thread-safe

    def get(self, key: str) -> str | None:
        with self._lock:
            item = self._data.get(key)
        return item[1] if item is not None else None

    def set(self, key: str, value: str, ttl: int) -> None:
        with self._lock:
            self._data[key] = (float(ttl), value)

    def delete(self, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                self._data.pop(key, None)

    def incr(self, key: str) -> int:
        with self._lock:
            current = int(self._data.get(key, (math.inf, "0"))[1]) + 1
            self._data[key] = (math.inf, str(current))
            return current


def _expires(_key: str, value: tuple[float, str], now: float) -> float:
    return now + value[0]


@dataclass(frozen=True)
class SearchEntry:
    """A kept search answer; `fresh` False once its TTL passed (then it is refreshed in the background)."""

    body: str
    fresh: bool


class ReadCache:
    """Cached entries per service (its document; the status view's records, api/status/) and search pages.

    A service's entries share the service's token: whatever invalidates one (any committed change
    to the service, its versions or its phase results) invalidates all of them.

    Every entry's key carries a token read *before* the data was loaded: the database change
    stamp (in-process), or a generation counter that invalidation moves on (Redis). A reader
    that loaded old data while a change committed stores it under the old token, which no
    later reader asks for, so a stale entry can never outlive the change.
    """

    def __init__(
        self, backend: Backend, settings: CacheSettings, stamp: Callable[[], int] | None, near: NearCache | None = None
    ) -> None:
        self._backend = backend
        self._settings = settings
        self._stamp = stamp  # None when the backend is shared (Redis): generations suffice
        self._near = near  # Redis: tokens and entries in memory, invalidated by pub/sub

    @property
    def shared(self) -> bool:
        return self._stamp is None

    def listen(self) -> None:
        """Start taking invalidations (Redis) now instead of at the first read: until its listener
        is subscribed, this process serves nothing from memory (the API calls this at start-up)."""
        if self._near is not None:
            self._near.start()

    def service_token(self, service_id: str) -> str:
        """Read before loading the service; pass to get/put."""
        return self._token(_service_generation(service_id))

    def search_token(self) -> str:
        return self._token(SEARCH_GENERATION)

    def get_service(self, service_id: str, token: str) -> dict[str, Any] | None:
        return self.get_entry(SERVICE, service_id, token)

    def put_service(self, service_id: str, token: str, value: dict[str, Any]) -> None:
        self.put_entry(SERVICE, service_id, token, value)

    def get_entry(self, kind: str, service_id: str, token: str) -> dict[str, Any] | None:
        """A `kind` of entry kept for the service (its document, its status record) under `service_token`."""
        return self._load(_entry_key(kind, service_id, token), token)

    def put_entry(self, kind: str, service_id: str, token: str, value: dict[str, Any]) -> None:
        self._put(_entry_key(kind, service_id, token), token, value, self._settings.service_ttl_seconds)

    def change_version(self, service_id: str) -> int | None:
        """A number that changes whenever the service's entries may have (memory only; None
        without Redis or while its invalidations are not being received)."""
        if self._near is None or not self._backend_available():
            return None
        return self._near.version(_service_generation(service_id))

    def peek_entry(self, kind: str, service_id: str) -> dict[str, Any] | None:
        """The entry if this process holds it under the service's current token: memory only, no I/O
        (None otherwise, and always without Redis: the caller then loads it off the event loop)."""
        if self._near is None or not self._backend_available():
            return None
        token = self._near.peek_token(_service_generation(service_id))
        key = _entry_key(kind, service_id, _generation_token(token)) if token is not None else None
        entry = self._near.entry(key) if key is not None else None
        return entry if isinstance(entry, dict) else None

    def get_search(self, query_hash: str, token: str) -> SearchEntry | None:
        """The search's answer kept under `token`, fresh or past its TTL (within the stale window)."""
        kept = self._load(f"mkt:search:{token}:{query_hash}", token)
        if kept is None or not isinstance(kept.get("body"), str):
            return None
        fresh_until = float(kept.get("fresh_until", 0))
        if time.time() >= fresh_until + self._settings.search_stale_seconds:
            return None  # memory (Redis' near cache) keeps entries past Redis' own expiry
        return SearchEntry(body=kept["body"], fresh=time.time() < fresh_until)

    def put_search(self, query_hash: str, token: str, body: str) -> None:
        """Keep a search's answer (its response body) under `token`: fresh for the TTL, then answered
        stale for `search_stale_seconds` more while someone refreshes it."""
        ttl, stale = self._settings.search_ttl_seconds, self._settings.search_stale_seconds
        entry = {"fresh_until": time.time() + ttl, "body": body}  # wall clock: shared through Redis
        self._put(f"mkt:search:{token}:{query_hash}", token, entry, ttl + stale)

    def invalidate(self, service_ids: Iterable[str]) -> None:
        """Move the services' generations and the search generation on (a change can move any result)."""
        if self._stamp is not None:
            return  # the committing transaction already bumped the database stamp
        keys = [*(_service_generation(service_id) for service_id in service_ids), SEARCH_GENERATION]
        for key in keys:
            self._backend.incr(key)
        if self._near is not None:
            self._near.forget(keys)
        if isinstance(self._backend, RedisBackend):
            self._backend.publish(keys)

    def announce(self, names: list[str]) -> None:
        """Publish names on the invalidation channel for other listeners (gateways: storage/consumption_feed.py).
        Redis only; without it the database change counter is their signal."""
        if names and isinstance(self._backend, RedisBackend):
            self._backend.publish(names)

    def _token(self, generation_key: str) -> str:
        if self._stamp is not None:
            return f"s{self._stamp()}"
        if self._near is not None:  # Redis
            if not self._backend_available():
                return NO_TOKEN  # the circuit is open: nothing cached is trusted, nothing is kept
            try:
                return _generation_token(self._near.token(generation_key, lambda: self._generation(generation_key)))
            except _RedisFailed:
                return NO_TOKEN
        return _generation_token(self._backend.get(generation_key) or "0")

    def _generation(self, generation_key: str) -> str:
        """The generation from Redis; raises when Redis failed (the read looked like a miss)."""
        value = self._backend.get(generation_key)
        if not self._backend_available():
            raise _RedisFailed
        return value or "0"

    def _backend_available(self) -> bool:
        return getattr(self._backend, "available", True) is True

    def _load(self, key: str, token: str) -> dict[str, Any] | None:
        if token == NO_TOKEN:
            return None
        # Memory only while Redis answers: an entry kept there is served only under a token Redis gave.
        if self._near is not None and self._backend_available() and (kept := self._near.entry(key)) is not None:
            return dict(kept)
        raw = self._backend.get(key)
        if raw is None:
            return None
        value: dict[str, Any] = json.loads(raw)
        if self._near is not None:
            self._near.keep(key, value)
        return dict(value)

    def _put(self, key: str, token: str, value: dict[str, Any], ttl: int) -> None:
        if token == NO_TOKEN:
            return
        self._backend.set(key, json.dumps(value), ttl)
        if self._near is not None:
            self._near.keep(key, value)


NO_TOKEN = "-"  # noqa: S105 (not a secret: Redis failed while the token was read; nothing is kept under it)


class _RedisFailed(Exception):
    pass


def _service_generation(service_id: str) -> str:
    return f"mkt:generation:service:{service_id}"


def _generation_token(generation: str) -> str:
    """The token of a Redis generation (the local backend's tokens are database stamps: "s…")."""
    return f"g{generation}"


def _entry_key(kind: str, service_id: str, token: str) -> str:
    return f"mkt:{kind}:{service_id}:{token}"


@lru_cache(maxsize=1)
def get_cache() -> ReadCache:
    """The process-wide cache for the configured backend."""
    settings = get_settings().cache
    if settings.redis_url:
        backend = RedisBackend(settings.redis_url)
        return ReadCache(backend, settings, stamp=None, near=backend.near_cache())
    return ReadCache(LocalBackend(), settings, stamp=read_change_stamp)
