"""The pre-call script (token buckets and quota reservation) against real Redis, and its in-process twin."""

from __future__ import annotations

import asyncio

import pytest
import redis as sync_redis

from gateway.limits import SCRIPT, Ask, LocalLimits, Verdict
from gateway.resp import RespClient
from tests.support.services import REDIS_URL, require_tcp

T = 5_000_000  # an explicit clock (ms); 0 would make the script read the server's
ASK = Ask(
    bucket="gw:rl:{c}:s",
    rpm=60,
    key_bucket="",
    key_rpm=0,
    quota="gw:quota:{c}:sub:2026-12",
    requests_per_month=-1,
    tokens_per_month=-1,
    reserve=0,
)


@pytest.fixture
def r() -> sync_redis.Redis:
    require_tcp("127.0.0.1", 6379, "Redis")
    client = sync_redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    return client


def run(r: sync_redis.Redis, ask: Ask, now_ms: int) -> Verdict:
    """The script as the gateway calls it, with an explicit clock."""
    keys = [ask.bucket, ask.key_bucket, ask.quota]
    args = [now_ms, ask.rpm, ask.key_rpm, ask.requests_per_month, ask.tokens_per_month, ask.reserve, 3600]
    raw = r.eval(SCRIPT, 3, *keys, *args)
    return Verdict(*(int(v) for v in raw), shared=True)  # type: ignore[misc]


def both(r: sync_redis.Redis, ask: Ask, times: list[int]) -> tuple[list[Verdict], list[Verdict]]:
    """The same sequence of requests through the Redis script and through LocalLimits."""
    local = LocalLimits()
    in_redis = [run(r, ask, t) for t in times]
    in_memory = [local.check(ask, float(t)) for t in times]
    return in_redis, in_memory


def strip(v: Verdict) -> tuple[int, int, int, int, int, int]:
    return v.verdict, v.limit, v.remaining, v.reset_ms, v.requests_used, v.tokens_used


def test_a_full_bucket_allows_its_capacity_then_one_per_refill(r: sync_redis.Redis) -> None:
    times = [1_000_000] * 61 + [1_000_999, 1_001_000]
    in_redis, in_memory = both(r, ASK, times)
    assert [v.verdict for v in in_redis] == [1] * 60 + [0, 0, 1]
    assert [strip(v) for v in in_redis] == [strip(v) for v in in_memory]
    assert in_redis[0].remaining == 59
    assert in_redis[59].remaining == 0
    assert in_redis[60].reset_ms == 1000  # one token a second at 60/min


def test_the_key_bucket_is_checked_too_and_a_refusal_takes_nothing(r: sync_redis.Redis) -> None:
    ask = Ask(ASK.bucket, 600, "gw:rk:{c}:k", 2, "", -1, -1, 0)
    in_redis, in_memory = both(r, ask, [T] * 4)
    assert [v.verdict for v in in_redis] == [1, 1, 0, 0]
    assert [(v.limit, v.remaining) for v in in_redis[:2]] == [(2, 1), (2, 0)]  # the tighter bucket is reported
    assert [strip(v) for v in in_redis] == [strip(v) for v in in_memory]
    # the refused calls took no token from the consumer's bucket: 600 - 2
    assert float(r.hget(ASK.bucket, "t") or 0) == 598


def test_request_and_token_quotas_reserve_and_refuse(r: sync_redis.Redis) -> None:
    ask = Ask(ASK.bucket, 0, "", 0, ASK.quota, 3, 250, 100)
    in_redis, in_memory = both(r, ask, [T] * 3)
    assert [v.verdict for v in in_redis] == [1, 1, -2]  # the third reservation would pass 250 tokens
    assert in_redis[2].tokens_used == 200
    assert [strip(v) for v in in_redis] == [strip(v) for v in in_memory]
    r.hincrby(ASK.quota, "t", -150)  # settled: the two calls used 25 tokens each
    assert run(r, ask, T).verdict == 1
    assert run(r, Ask(ASK.bucket, 0, "", 0, ASK.quota, 3, 10**6, 1), T).verdict == -1  # 4th request of 3


def test_concurrent_reservations_never_overshoot(r: sync_redis.Redis) -> None:
    """200 requests at once against a quota of exactly 50: exactly 50 pass."""
    ask = Ask(ASK.bucket, 0, "", 0, ASK.quota, 50, -1, 0)

    async def go() -> list[int]:
        client = RespClient(REDIS_URL, 5.0)  # the gateway's client: one connection, pipelined
        keys: list[str | int] = [ask.bucket, ask.key_bucket, ask.quota]

        async def one() -> int:
            raw = await client.evalsha(SCRIPT, keys, [0, 0, 0, 50, -1, 0, 3600])
            return int(raw[0])

        try:
            return await asyncio.gather(*(one() for _ in range(200)))
        finally:
            await client.close()

    verdicts = asyncio.run(go())
    assert verdicts.count(1) == 50
    assert verdicts.count(-1) == 150
    assert int(r.hget(ASK.quota, "r") or 0) == 50
