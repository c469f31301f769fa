"""Calls to providers: one aiohttp session (and connection pool) per process, timeouts, breakers.

aiohttp's client, not httpx: on these machines a proxy built on httpx.AsyncClient topped out at
~450 requests/s, on aiohttp's at ~3,300-3,900 (DESIGN.md, environment facts). Timeouts are three:
connecting, the response's status line (first byte), and the whole call including a stream's
last byte. Each provider has a circuit breaker: after `breaker_failures` failures in a row
(unreachable, timed out, 5xx) its calls are refused at once for `breaker_reset_seconds`, then one
trial call decides whether it closes again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from core.settings import GatewaySettings
from gateway.errors import GatewayError


@dataclass
class Breaker:
    failures_to_open: int
    reset_seconds: float
    failures: int = 0
    open_until: float = 0.0
    trial_running: bool = False

    def before_call(self, provider: str) -> None:
        """Refuse while open; after the reset time let exactly one trial call through."""
        if self.failures < self.failures_to_open:
            return
        now = time.monotonic()
        if now < self.open_until or self.trial_running:
            raise GatewayError(
                503,
                "upstream_circuit_open",
                f"provider {provider!r} is failing; calls are refused for a while",
                headers={"Retry-After": str(max(1, int(self.open_until - now + 0.999)))},
            )
        self.trial_running = True

    def record(self, ok: bool) -> None:
        self.trial_running = False
        if ok:
            self.failures = 0
            return
        self.failures += 1
        if self.failures >= self.failures_to_open:
            self.open_until = time.monotonic() + self.reset_seconds


class Upstream:
    """The process's client session and the breakers of the providers it calls."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.session: aiohttp.ClientSession | None = None
        self.breakers: dict[str, Breaker] = {}

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.settings.pool_size, ttl_dns_cache=300, keepalive_timeout=30, enable_cleanup_closed=True
        )
        # sock_read: no byte from the provider for this long (the first byte, or the next of a stream)
        timeout = aiohttp.ClientTimeout(
            total=self.settings.total_timeout_seconds,
            sock_connect=self.settings.connect_timeout_seconds,
            sock_read=self.settings.first_byte_timeout_seconds,
        )
        # auto_decompress off: bodies pass through as the provider encoded them
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def breaker(self, provider: str) -> Breaker:
        found = self.breakers.get(provider)
        if found is None:
            s = self.settings
            found = self.breakers[provider] = Breaker(s.breaker_failures, s.breaker_reset_seconds)
        return found

    async def send(self, url: str, body: bytes, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """POST and return once the status line and headers are in (the body is read by the caller)."""
        assert self.session is not None
        try:
            return await self.session.post(url, data=body, headers=headers, allow_redirects=False)
        except TimeoutError as exc:
            raise GatewayError(504, "upstream_timeout", "the provider did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise GatewayError(502, "upstream_unreachable", f"the provider could not be reached: {exc}") from exc


def upstream_failure(exc: BaseException) -> GatewayError:
    """A failure while reading the provider's body, in our error shape."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return GatewayError(504, "upstream_timeout", "the provider's answer took too long")
    return GatewayError(502, "upstream_failed", f"the provider's answer broke off: {exc}")
