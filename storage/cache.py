"""Read cache for service reads and search results: Redis when configured, in-process otherwise.

Invalidation is immediate and automatic: a session listener (storage/database.py) collects the
services a transaction changed and, once it commits, drops their entries and moves the search
generation on. With Redis that reaches every process. The in-process cache cannot hear other
processes (the worker's flow runs), so its entries are also tagged with a database change
counter (`cache_stamps`) that every such transaction bumps: one primary-key read per lookup
tells whether anything changed since the entry was stored.

Redis failures never fail a request: the cache degrades to misses and logs.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any, Protocol

import redis

from core.settings import CacheSettings, get_settings

log = logging.getLogger("marketplace.cache")
SEARCH_GENERATION = "mkt:search:generation"


class Backend(Protocol):
    def get(self, key: str) -> str | None: ...
    def set(self, key: str, value: str, ttl: int) -> None: ...
    def delete(self, keys: list[str]) -> None: ...
    def incr(self, key: str) -> int: ...


class RedisBackend:
    """Shared by every process; short socket timeouts so a sick Redis costs milliseconds, not seconds."""

    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)

    def get(self, key: str) -> str | None:
        value = self._safe(lambda: self._redis.get(key))
        return value.decode() if isinstance(value, bytes) else None

    def set(self, key: str, value: str, ttl: int) -> None:
        self._safe(lambda: self._redis.set(key, value, ex=ttl))

    def delete(self, keys: list[str]) -> None:
        if keys:
            self._safe(lambda: self._redis.delete(*keys))

    def incr(self, key: str) -> int:
        value = self._safe(lambda: self._redis.incr(key))
        return int(value) if isinstance(value, int) else 0

    def _safe(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except redis.RedisError as exc:
            log.warning("redis unavailable, serving without cache: %s", exc)
            return None


class LocalBackend:
    """A bounded, thread-safe TTL map inside this process."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._data: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            item = self._data.get(key)
            if item is None or item[0] < time.monotonic():
                self._data.pop(key, None)
                return None
            self._data.move_to_end(key)
            return item[1]

    def set(self, key: str, value: str, ttl: int) -> None:
        with self._lock:
            self._data[key] = (time.monotonic() + ttl, value)
            self._data.move_to_end(key)
            while len(self._data) > self._max:
                self._data.popitem(last=False)

    def delete(self, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                self._data.pop(key, None)

    def incr(self, key: str) -> int:
        with self._lock:
            current = int(self._data.get(key, (float("inf"), "0"))[1]) + 1
            self._data[key] = (float("inf"), str(current))
            return current


class ReadCache:
    """Cached service documents and search pages, keyed so one invalidation covers every search."""

    def __init__(self, backend: Backend, settings: CacheSettings, stamp: Callable[[], int] | None) -> None:
        self._backend = backend
        self._settings = settings
        self._stamp = stamp  # None when the backend is shared (Redis): explicit invalidation suffices

    @property
    def shared(self) -> bool:
        return self._stamp is None

    def get_service(self, service_id: str) -> dict[str, Any] | None:
        return self._load(f"mkt:service:{service_id}")

    def put_service(self, service_id: str, value: dict[str, Any]) -> None:
        self._store(f"mkt:service:{service_id}", value, self._settings.service_ttl_seconds)

    def get_search(self, query_hash: str) -> dict[str, Any] | None:
        return self._load(self._search_key(query_hash))

    def put_search(self, query_hash: str, value: dict[str, Any]) -> None:
        self._store(self._search_key(query_hash), value, self._settings.search_ttl_seconds)

    def invalidate(self, service_ids: Iterable[str]) -> None:
        """Drop the services' entries and every cached search (a change can move any result)."""
        self._backend.delete([f"mkt:service:{sid}" for sid in service_ids])
        self._backend.incr(SEARCH_GENERATION)

    def _search_key(self, query_hash: str) -> str:
        return f"mkt:search:{self._backend.get(SEARCH_GENERATION) or 0}:{query_hash}"

    def _load(self, key: str) -> dict[str, Any] | None:
        raw = self._backend.get(key)
        if raw is None:
            return None
        entry = json.loads(raw)
        if self._stamp is not None and entry["stamp"] != self._stamp():
            return None  # another process changed something since this entry was stored
        value: dict[str, Any] = entry["value"]
        return value

    def _store(self, key: str, value: dict[str, Any], ttl: int) -> None:
        stamp = self._stamp() if self._stamp is not None else None
        self._backend.set(key, json.dumps({"stamp": stamp, "value": value}, default=str), ttl)


@lru_cache(maxsize=1)
def get_cache() -> ReadCache:
    """The process-wide cache for the configured backend."""
    settings = get_settings().cache
    if settings.redis_url:
        return ReadCache(RedisBackend(settings.redis_url), settings, stamp=None)
    from storage.database import read_change_stamp  # the stamp lives in the database

    return ReadCache(LocalBackend(), settings, stamp=read_change_stamp)
