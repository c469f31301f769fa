"""Per-client rate limit on publishing requests (the seed's 100 per 15 minutes by default).

Counters live in Redis so every API process shares them (a moving window from the `limits`
library). A client is the token's subject, or the peer address for a request without one.

When Redis is unreachable the limit *fails open to per-process counting*: each API process
keeps enforcing the same limit from memory, so publishing stays available and still bounded
(by limit x processes) instead of refusing every provider during a cache outage. Redis is
skipped for a few seconds after a failure, so an outage does not add a timeout to each request.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter
from redis.exceptions import RedisError

from api.auth import optional_principal
from core.errors import RateLimitedError
from core.settings import Settings

log = logging.getLogger("marketplace.api.rate_limit")

REDIS_RETRY_AFTER_SECONDS = 5.0
REDIS_TIMEOUT_SECONDS = 0.25


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float  # epoch seconds when the oldest counted request leaves the window
    shared: bool  # counted in Redis (True) or in this process only (False)

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.reset_at - time.time())))
        return headers


class PublishRateLimiter:
    """Moving-window limiter, in Redis when configured, in memory otherwise or when Redis is down."""

    def __init__(self, settings: Settings) -> None:
        config = settings.rate_limit
        self.enabled = config.enabled
        self.window_seconds = config.window_seconds
        self.item: RateLimitItem = RateLimitItemPerSecond(config.publish_limit, config.window_seconds)
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._shared: MovingWindowRateLimiter | None = None
        url = config.redis_url or settings.cache.redis_url
        if url:
            storage: Storage = RedisStorage(
                url,
                key_prefix="marketplace-ratelimit",
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            )
            self._shared = MovingWindowRateLimiter(storage)
        self._skip_redis_until = 0.0
        self._lock = threading.Lock()

    def hit(self, client: str) -> Decision:
        """Count one request of `client` and say whether it is within the limit."""
        limiter = self._shared if self._shared is not None and time.monotonic() >= self._skip_redis_until else None
        if limiter is not None:
            try:
                return self._decide(limiter, client, shared=True)
            except (RedisError, OSError) as exc:
                with self._lock:
                    self._skip_redis_until = time.monotonic() + REDIS_RETRY_AFTER_SECONDS
                log.warning("rate limit: Redis unavailable (%s); counting in this process for now", exc)
        return self._decide(self._local, client, shared=False)

    def _decide(self, limiter: MovingWindowRateLimiter, client: str, shared: bool) -> Decision:
        allowed = limiter.hit(self.item, "publish", client)
        stats = limiter.get_window_stats(self.item, "publish", client)
        return Decision(allowed, self.item.amount, stats.remaining, stats.reset_time, shared)


def client_key(request: Request) -> str:
    """The token's subject when there is one, else the peer address."""
    principal = getattr(request.state, "principal", None) or optional_principal(request)
    if principal is not None:
        return f"sub:{principal.subject}"
    return f"ip:{request.client.host if request.client else 'unknown'}"


def publish_quota(request: Request, response: Response) -> Decision | None:
    """Count a publishing request; 429 with Retry-After when the client is over its limit."""
    limiter: PublishRateLimiter = request.app.state.rate_limiter
    if not limiter.enabled:
        return None
    decision = limiter.hit(client_key(request))
    if not decision.allowed:
        raise RateLimitedError(
            f"rate limit of {decision.limit} publishing requests per {limiter.window_seconds} s exceeded; "
            "retry after the time in Retry-After",
            headers=decision.headers(),
        )
    response.headers.update(decision.headers())
    return decision


PublishQuota = Annotated[Decision | None, Depends(publish_quota)]
