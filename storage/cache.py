"""Read cache for service reads and search results: Redis when configured, in-process otherwise.

Invalidation is immediate and automatic: a session listener (storage/database.py) collects the
services a transaction changed and, once it commits, moves their generations (and the search
generation) on in Redis, which every process sees. The in-process cache cannot hear other
processes (the worker's flow runs), so it keys entries by a database change counter
(`cache_stamps`) that every such transaction bumps: one primary-key read per lookup.

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
    """Cached service documents and search pages.

    Every entry's key carries a token read *before* the data was loaded: the database change
    stamp (in-process), or a generation counter that invalidation moves on (Redis). A reader
    that loaded old data while a change committed stores it under the old token, which no
    later reader asks for, so a stale entry can never outlive the change.
    """

    def __init__(self, backend: Backend, settings: CacheSettings, stamp: Callable[[], int] | None) -> None:
        self._backend = backend
        self._settings = settings
        self._stamp = stamp  # None when the backend is shared (Redis): generations suffice

    @property
    def shared(self) -> bool:
        return self._stamp is None

    def service_token(self, service_id: str) -> str:
        """Read before loading the service; pass to get/put."""
        return self._token(f"mkt:generation:service:{service_id}")

    def search_token(self) -> str:
        return self._token(SEARCH_GENERATION)

    def get_service(self, service_id: str, token: str) -> dict[str, Any] | None:
        return self._load(f"mkt:service:{service_id}:{token}")

    def put_service(self, service_id: str, token: str, value: dict[str, Any]) -> None:
        self._backend.set(f"mkt:service:{service_id}:{token}", json.dumps(value), self._settings.service_ttl_seconds)

    def get_search(self, query_hash: str, token: str) -> dict[str, Any] | None:
        return self._load(f"mkt:search:{token}:{query_hash}")

    def put_search(self, query_hash: str, token: str, value: dict[str, Any]) -> None:
        self._backend.set(f"mkt:search:{token}:{query_hash}", json.dumps(value), self._settings.search_ttl_seconds)

    def invalidate(self, service_ids: Iterable[str]) -> None:
        """Move the services' generations and the search generation on (a change can move any result)."""
        if self._stamp is not None:
            return  # the committing transaction already bumped the database stamp
        for service_id in service_ids:
            self._backend.incr(f"mkt:generation:service:{service_id}")
        self._backend.incr(SEARCH_GENERATION)

    def _token(self, generation_key: str) -> str:
        if self._stamp is not None:
            return f"s{self._stamp()}"
        return f"g{self._backend.get(generation_key) or 0}"

    def _load(self, key: str) -> dict[str, Any] | None:
        raw = self._backend.get(key)
        if raw is None:
            return None
        value: dict[str, Any] = json.loads(raw)
        return value


@lru_cache(maxsize=1)
def get_cache() -> ReadCache:
    """The process-wide cache for the configured backend."""
    settings = get_settings().cache
    if settings.redis_url:
        return ReadCache(RedisBackend(settings.redis_url), settings, stamp=None)
    from storage.database import read_change_stamp  # the stamp lives in the database

    return ReadCache(LocalBackend(), settings, stamp=read_change_stamp)
