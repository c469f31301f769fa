"""Two gateway processes sharing Redis: one rate limit, one quota, revocation heard by both."""

from __future__ import annotations

import asyncio
import time

import httpx

from core.plans import Plan
from tests.gateway.conftest import Setup
from tests.gateway.test_proxy import CHAT, rows
from tests.support.gateway import GatewayProcess, revoke


async def burst(urls: list[str], headers: dict[str, str], count: int, concurrency: int) -> tuple[list[int], float]:
    """`count` chat calls spread over the gateways, `concurrency` at a time: statuses and seconds taken."""
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def one(n: int) -> int:
            async with gate:
                answer = await client.post(f"{urls[n % len(urls)]}/v1/chat/completions", json=CHAT, headers=headers)
                return answer.status_code

        start = time.monotonic()
        codes = await asyncio.gather(*(one(n) for n in range(count)))
        return list(codes), time.monotonic() - start


def two(setup: Setup) -> tuple[GatewayProcess, GatewayProcess]:
    return setup.gateway("gateway-1").start(), setup.gateway("gateway-2").start()


def test_a_limit_of_100_per_minute_holds_across_two_processes(setup: Setup) -> None:
    setup.new_consumer("consumer-2", Plan(name="hundred", requests_per_minute=100))
    a, b = two(setup)
    try:
        codes, seconds = asyncio.run(burst([a.url, b.url], setup.auth, 300, 60))
    finally:
        a.stop()
        b.stop()
    # a token bucket of 100 refills 100/60 a second: the burst gets 100, plus what refilled while it ran
    refilled = int(seconds * 100 / 60)
    passed = codes.count(200)
    assert 100 <= passed <= 101 + refilled, (passed, seconds)
    assert codes.count(429) == 300 - passed
    print(f"300 sent in {seconds:.2f} s through 2 processes: {passed} passed")


def test_200_concurrent_calls_against_a_quota_of_50_get_exactly_50(setup: Setup) -> None:
    setup.new_consumer("consumer-2", Plan(name="fifty", requests_per_minute=10_000, requests_per_month=50))
    a, b = two(setup)
    try:
        codes, _ = asyncio.run(burst([a.url, b.url], setup.auth, 200, 200))
    finally:
        a.stop()
        b.stop()
    assert codes.count(200) == 50
    assert codes.count(429) == 150
    assert len([r for r in rows(setup, 200) if r.status == 200]) == 50


def test_a_revoked_key_stops_on_every_process_within_a_second(setup: Setup) -> None:
    a, b = two(setup)
    try:
        for gw in (a, b):
            assert httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers=setup.auth).status_code == 200
        revoke("consumer-1", setup.key_id)
        revoked_at = time.monotonic()
        refused_after = {}
        while len(refused_after) < 2 and time.monotonic() - revoked_at < 5:
            for gw in (a, b):
                answer = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers=setup.auth)
                if answer.status_code == 401 and gw.url not in refused_after:
                    refused_after[gw.url] = time.monotonic() - revoked_at
    finally:
        a.stop()
        b.stop()
    assert len(refused_after) == 2
    assert max(refused_after.values()) < 1.0, refused_after
