"""Rate limits and quotas: one Redis script per request before the call, an in-process twin.

Token buckets hold a minute's worth of requests (capacity = requests per minute) and refill
continuously; a burst gets the capacity at once and then one request per 60/rpm seconds. The
monthly quota (requests and tokens per calendar month, UTC) is reserved before the call with the
request's largest possible cost and settled with the real usage after it (gateway/handoff.py).

When Redis fails, the limits fail open to per-process counting: the same script's arithmetic in
this process's memory, so the gateway keeps serving, bounded by limit x processes, until Redis
answers again (retried after `redis_retry_seconds`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway.resp import RedisReplyError, RespClient

log = logging.getLogger("marketplace.gateway.limits")
SCRIPT = (Path(__file__).parent / "limits_script.lua").read_text()
QUOTA_GRACE_SECONDS = 40 * 24 * 3600  # a month's counters outlive it, for settles that come late


@dataclass(frozen=True, slots=True)
class Ask:
    """What one request asks of the limits."""

    bucket: str  # consumer+service bucket key
    rpm: int  # 0: none
    key_bucket: str  # "" for none
    key_rpm: int
    quota: str  # quota hash key, "" for none
    requests_per_month: int  # -1: none
    tokens_per_month: int  # -1: none
    reserve: int  # tokens reserved


@dataclass(frozen=True, slots=True)
class Verdict:
    verdict: int  # 1 allowed, 0 rate limited, -1 request quota, -2 token quota
    limit: int  # -1 when no bucket applied
    remaining: int
    reset_ms: int
    requests_used: int
    tokens_used: int
    shared: bool  # decided in Redis (True) or in this process

    @property
    def allowed(self) -> bool:
        return self.verdict == 1


def month_of(now: float) -> tuple[str, float]:
    """The quota period of an instant (e.g. '2026-12') and when it ends (epoch seconds, UTC)."""
    moment = datetime.fromtimestamp(now, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return f"{moment.year:04d}-{moment.month:02d}", datetime(year, month, 1, tzinfo=UTC).timestamp()


def bucket_keys(consumer_id: str, service_id: str, key_id: str) -> tuple[str, str]:
    """The consumer+service bucket and the key's own; one hash tag (the consumer) so that every key
    one script touches lives on the same Redis Cluster slot."""
    return f"gw:rl:{{{consumer_id}}}:{service_id}", f"gw:rk:{{{consumer_id}}}:{key_id}"


def quota_key(consumer_id: str, subscription_id: str, period: str) -> str:
    return f"gw:quota:{{{consumer_id}}}:{subscription_id}:{period}"


class LocalLimits:
    """The script's arithmetic in memory: the embedded default, and the fallback while Redis is down."""

    def __init__(self) -> None:
        self.buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, ms)
        self.quotas: dict[str, list[int]] = {}  # key -> [requests, tokens]

    def check(self, ask: Ask, now_ms: float | None = None) -> Verdict:
        now = time.time() * 1000 if now_ms is None else now_ms
        checks = []
        for key, rpm in ((ask.bucket, ask.rpm), (ask.key_bucket, ask.key_rpm)):
            if key and rpm > 0:
                tokens, last = self.buckets.get(key, (float(rpm), now))
                tokens = min(rpm, tokens + max(0.0, now - last) * rpm / 60000)
                if tokens < 1:
                    return Verdict(0, rpm, 0, math.ceil((1 - tokens) * 60000 / rpm), 0, 0, False)
                checks.append((key, rpm, tokens))
        used = self.quotas.setdefault(ask.quota, [0, 0]) if ask.quota else [0, 0]
        if ask.quota and ask.requests_per_month >= 0 and used[0] + 1 > ask.requests_per_month:
            return Verdict(-1, ask.requests_per_month, 0, 0, used[0], used[1], False)
        if ask.quota and ask.tokens_per_month >= 0 and used[1] + ask.reserve > ask.tokens_per_month:
            return Verdict(-2, ask.tokens_per_month, 0, 0, used[0], used[1], False)
        if ask.quota:
            used[0] += 1
            used[1] += ask.reserve
        return self._take(checks, now, used)

    def _take(self, checks: list[tuple[str, int, float]], now: float, used: list[int]) -> Verdict:
        limit, remaining, reset = -1, -1, 0
        for key, rpm, tokens in checks:
            left = tokens - 1
            self.buckets[key] = (left, now)
            if remaining < 0 or left < remaining:
                limit, remaining, reset = rpm, math.floor(left), math.ceil((rpm - left) * 60000 / rpm)
        return Verdict(1, limit, remaining, reset, used[0], used[1], False)

    def settle(self, quota: str, requests: int, tokens: int) -> None:
        """Correct a reservation: add `requests` and `tokens` (negative to give back)."""
        if quota in self.quotas:
            self.quotas[quota][0] += requests
            self.quotas[quota][1] += tokens


class Limits:
    """Redis when configured and answering; this process's memory otherwise (fail-open)."""

    def __init__(self, redis: RespClient | None, retry_seconds: float) -> None:
        self.redis = redis
        self.local = LocalLimits()
        self._retry_seconds = retry_seconds
        self._down_until = 0.0

    @property
    def redis_up(self) -> bool:
        return self.redis is not None and time.monotonic() >= self._down_until

    def redis_failed(self, exc: BaseException) -> None:
        """Count in this process for a while: a down Redis must not add a timeout to every request."""
        if time.monotonic() >= self._down_until:
            log.warning("Redis unavailable (%s): limits counted in this process for now", exc)
        self._down_until = time.monotonic() + self._retry_seconds

    async def check(self, ask: Ask) -> Verdict:
        if self.redis_up:
            try:
                return await self._shared(ask)
            except (RedisReplyError, OSError) as exc:
                self.redis_failed(exc)
        return self.local.check(ask)

    async def _shared(self, ask: Ask) -> Verdict:
        assert self.redis is not None
        keys: list[str | int] = [ask.bucket, ask.key_bucket, ask.quota]
        args: list[str | int] = [0, ask.rpm, ask.key_rpm, ask.requests_per_month, ask.tokens_per_month, ask.reserve]
        raw = await self.redis.evalsha(SCRIPT, keys, [*args, QUOTA_GRACE_SECONDS])
        verdict, limit, remaining, reset_ms, requests_used, tokens_used = (int(v) for v in raw)
        return Verdict(verdict, limit, remaining, reset_ms, requests_used, tokens_used, shared=True)
