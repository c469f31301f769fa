"""A lean pipelined Redis client for the hot path: one connection, replies parsed by hiredis.

redis-py's asyncio client spends a few hundred microseconds of CPU per command (a pool
checkout, its own buffering and parsing layers, retries); two commands per call made it most of
the gateway's cost. Here every command of every concurrent call goes down one connection:
commands written in the same event-loop turn leave in one write, replies come back in order and
resolve their futures. A watchdog fails everything waiting once the oldest command is older than
the timeout, and the connection is opened again on the next command, so a down or hung Redis
costs one timeout and then the callers' fail-open logic takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import urlsplit

import hiredis

Arg = bytes | str | int | float


class RedisUnavailable(ConnectionError):
    """Redis could not be reached or did not answer in time."""


class RedisReplyError(Exception):
    """Redis answered with an error."""


def encode(args: tuple[Arg, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    """One connection: its own queue of commands awaiting replies, so a reply can only ever
    resolve a command sent on the same connection."""

    def __init__(self, client: RespClient) -> None:
        self.client = client
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.out: list[bytes] = []
        self.flush_scheduled = False
        self.dead: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes

    def send(self, args: tuple[Arg, ...]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.dead is not None:
            future.set_exception(self.dead)
            return future
        self.waiting.append((future, time.monotonic()))
        self.out.append(encode(args))
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)
        return future

    def flush(self) -> None:
        """Everything queued this loop turn leaves in one write."""
        self.flush_scheduled = False
        data, self.out = b"".join(self.out), []
        if self.transport is None or self.transport.is_closing():
            self.fail(RedisUnavailable("Redis connection closed"))
        else:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while self.waiting and (reply := self.reader.gets()) is not False:
            future, _ = self.waiting.popleft()
            if future.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(RedisReplyError(str(reply)))
            else:
                future.set_result(reply)

    def overdue(self, timeout: float) -> bool:
        return bool(self.waiting) and time.monotonic() - self.waiting[0][1] > timeout

    def fail(self, exc: Exception) -> None:
        """This connection is done: every command still waiting on it fails, and any later one too."""
        self.dead = self.dead or exc
        if self.transport is not None:
            self.transport.abort()
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisUnavailable(f"Redis connection lost: {exc or 'closed'}"))
        self.client.lost(self)


class RespClient:
    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 6379
        self.db = int(parts.path.lstrip("/") or 0)
        self.password = parts.password
        self.timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._scripts: dict[str, str] = {}  # sha -> source

    async def _connection(self) -> _Protocol:
        if self._protocol is not None:
            return self._protocol
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().create_task(self._connect(self._connecting))
        return await asyncio.shield(self._connecting)

    async def _connect(self, done: asyncio.Future[_Protocol]) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                _, protocol = await loop.create_connection(lambda: _Protocol(self), self.host, self.port)
                setup: list[tuple[Arg, ...]] = [("AUTH", self.password)] if self.password else []
                setup += [("SELECT", self.db)] if self.db else []
                for command in setup:
                    await protocol.send(command)
            self._protocol = protocol
            done.set_result(protocol)
            if self._watchdog is None or self._watchdog.done():
                self._watchdog = loop.create_task(self._watch())
        except (OSError, TimeoutError, RedisReplyError) as exc:
            self._protocol = None
            done.set_exception(RedisUnavailable(f"Redis unavailable at {self.host}:{self.port}: {exc}"))
            done.exception()  # retrieved here when nobody waits
        finally:
            self._connecting = None

    async def execute(self, *args: Arg) -> Any:
        protocol = await self._connection()
        return await protocol.send(args)

    async def pipeline(self, commands: list[tuple[Arg, ...]]) -> list[Any]:
        """Several commands sent together; every reply (raises the first error after all arrived)."""
        protocol = await self._connection()
        futures = [protocol.send(c) for c in commands]
        return list(await asyncio.gather(*futures))

    async def evalsha(self, source: str, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """Run a script by its hash, loading it once when the server does not know it."""
        sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 (Redis names scripts by SHA-1)
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await self.execute("EVAL", source, len(keys), *keys, *args)

    async def _watch(self) -> None:
        """Fail whatever waits too long: a hung Redis must not hold calls beyond the timeout."""
        while True:
            await asyncio.sleep(min(0.05, self.timeout / 4))
            protocol = self._protocol
            if protocol is not None and protocol.overdue(self.timeout):
                self._protocol = None
                protocol.fail(RedisUnavailable(f"Redis did not answer within {self.timeout} s"))

    def lost(self, protocol: _Protocol) -> None:
        if protocol is self._protocol:
            self._protocol = None

    async def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
