"""The Redis cache's tokens and entries kept in this process's memory, invalidated by Redis pub/sub.

Reading a cached status report from Redis took two round trips (the service's generation, then
the entry). On a machine whose cores are busy running publications, each round trip waits for
Redis to be scheduled, and a report polled hundreds of times a second paid that on every read.
Here both come from memory:

- entries are keyed by the token they were loaded under, so a copy can never be out of date:
  they are kept in a bounded LRU map (cachetools);
- generations (tokens) move on when a commit changes a service. Every invalidation is also
  published on a Redis channel; a thread of this process listens on it and drops what each
  message names as it arrives. A change made by this process is dropped at once (`forget`);
  one made elsewhere is seen as soon as its message is read, which is about as soon as a round
  trip to Redis would have seen it, without a request ever touching the subscription (reading
  it on every request cost a quarter of the API's CPU under load).

Memory is trusted only while the subscription is up: before it is confirmed, after it drops, and
until it is back, tokens are read from Redis as before (and what was kept is forgotten, since
messages may have been missed). A token read from Redis is kept only if no invalidation of it
arrived while it was being read.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import redis
from cachetools import LRUCache

log = logging.getLogger("marketplace.cache")
CHANNEL = "mkt:invalidations"
# Names on the channel that are the gateways' (storage/consumption_feed.py), not this cache's.
CONSUMPTION_PREFIX = "mkt:consumption:"


class NearCache:
    """Tokens (by generation key) and immutable entries (by key) of one Redis cache, in memory."""

    def __init__(self, client: redis.Redis, *, max_entries: int = 4096, poll_seconds: float = 0.5) -> None:
        self._client = client
        self._poll_seconds = poll_seconds  # the listener's longest wait for a message (then it checks for close())
        self._lock = threading.Lock()  # guards the maps (the listener thread alone reads the subscription)
        self._tokens: dict[str, str] = {}
        # Invalidations seen per generation key (only keys that changed: a read of an unknown id adds
        # nothing), plus one epoch for "forget everything"; both only grow, so their sum is a version.
        self._changes: dict[str, int] = {}
        self._epoch = 0
        self._entries: LRUCache[str, Any] = LRUCache(max_entries)
        self._pubsub: Any = None  # redis.client.PubSub once subscribed
        self._live = False
        self._started = False
        self._stopped = threading.Event()

    @staticmethod
    def publish(client: redis.Redis, generation_keys: Iterable[str]) -> None:
        """Tell every process's near cache that these generations moved on (after the INCRs)."""
        client.publish(CHANNEL, " ".join(generation_keys))

    def token(self, generation_key: str, read: Callable[[], str]) -> str:
        """The generation's token from memory when the subscription is up, else `read()` (from Redis)."""
        if not self._current():
            return read()
        with self._lock:
            known = self._tokens.get(generation_key)
            changes = self._version(generation_key)
        if known is not None:
            return known
        token = read()
        with self._lock:
            if self._live and self._version(generation_key) == changes:
                self._tokens[generation_key] = token
        return token

    def peek_token(self, generation_key: str) -> str | None:
        """The token if memory has it and may be trusted now; never asks Redis."""
        if not self._current():
            return None
        with self._lock:
            return self._tokens.get(generation_key)

    def version(self, generation_key: str) -> int | None:
        """How many invalidations of the generation this process has seen, or None while memory is
        not trusted. Equal versions: no change heard of in between."""
        if not self._current():
            return None
        with self._lock:
            return self._version(generation_key)

    def entry(self, key: str) -> Any | None:
        with self._lock:
            return self._entries.get(key)

    def keep(self, key: str, value: Any) -> None:
        with self._lock:
            self._entries[key] = value

    def forget(self, generation_keys: Iterable[str]) -> None:
        """This process changed these generations: drop them now (the message comes back later too)."""
        with self._lock:
            for key in generation_keys:
                self._tokens.pop(key, None)
                self._changes[key] = self._changes.get(key, 0) + 1

    def reset(self) -> None:
        """Forget everything: Redis failed for this process, so invalidations may have been missed,
        and a Redis that lost its data starts its generations again (old tokens come back)."""
        with self._lock:
            self._forget_all()

    def _forget_all(self) -> None:
        self._tokens.clear()
        self._entries.clear()
        self._epoch += 1

    def close(self) -> None:
        self._stopped.set()

    def _version(self, generation_key: str) -> int:
        return self._epoch + self._changes.get(generation_key, 0)  # caller holds the lock

    def _current(self) -> bool:
        """Whether memory may be trusted now (the listener applies invalidations as they arrive)."""
        if not self._started:
            self.start()
        return self._live

    def start(self) -> None:
        """Start the listener thread (once; the first use of memory otherwise does)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._listen, name="cache-invalidations", daemon=True).start()

    def _listen(self) -> None:
        """Keep subscribed and apply each message as it arrives; resubscribe after a loss."""
        backoff = 0.5
        while not self._stopped.is_set():
            if self._pubsub is None and not self._subscribe():
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            self._receive()

    def _subscribe(self) -> bool:
        try:
            pubsub = self._client.pubsub(ignore_subscribe_messages=False)  # type: ignore[no-untyped-call]
            pubsub.subscribe(CHANNEL)
            confirmation = pubsub.get_message(timeout=2.0)
        except redis.RedisError as exc:
            log.warning("cache invalidations unavailable, reading tokens from Redis: %s", exc)
            return False
        if not confirmation or confirmation.get("type") != "subscribe":
            pubsub.close()
            return False
        with self._lock:
            self._forget_all()  # anything learnt before the subscription may have missed a message
            self._pubsub, self._live = pubsub, True
        return True

    def _receive(self) -> None:
        """Wait up to `poll_seconds` for a message and apply it (only this thread reads the subscription)."""
        try:
            message = self._pubsub.get_message(timeout=self._poll_seconds)
        except (redis.RedisError, OSError) as exc:  # messages may be lost: trust nothing until resubscribed
            log.warning("cache invalidation feed lost, reading tokens from Redis until it is back: %s", exc)
            with self._lock:
                self._live = False
                self._forget_all()
            with contextlib.suppress(Exception):  # closing a connection that already failed
                self._pubsub.close()
            self._pubsub = None
            return
        if message is None or message.get("type") != "message":
            return
        data = message["data"]
        words = (data.decode() if isinstance(data, bytes) else str(data)).split()
        keys = [key for key in words if not key.startswith(CONSUMPTION_PREFIX)]
        if not keys:
            return
        with self._lock:
            for key in keys:
                self._tokens.pop(key, None)
                self._changes[key] = self._changes.get(key, 0) + 1
