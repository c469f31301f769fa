"""An open-loop HTTP/1.1 load generator on bare asyncio streams, for loopback benchmarks.

httpx costs about a millisecond of CPU per request in the client; at a few hundred requests a
second on a 2-core machine that is a core the server under test no longer has, and the client's
own delays end up in the figures. This one writes a prepared request on a keep-alive connection
and reads the status line, the headers and a Content-Length body: ~50 µs per request.

Open loop: request n is due at start + n / rate whatever the answers do, and its latency is
measured from the moment it was due, so a stalled server shows in the figures instead of slowing
the generator down. A request due while all connections are busy is not queued: it counts as an
error ("no free connection"). Every request has a timeout; the run stops by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Answer:
    status: int
    body: bytes


@dataclass
class LoadResult:
    """What one run saw; latencies of successful (2xx) answers, in ms from the time each was due."""

    scheduled: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    lag_ms: float = 0.0  # the generator's worst delay behind its own schedule
    send_seconds: float = 0.0


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes, timeout: float) -> Answer:
        reused = self.writer is not None
        try:
            return await self._exchange(raw, timeout)
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
            # The server closed a keep-alive connection that sat idle (uvicorn: after 5 s) just as
            # we used it: what HTTP clients do, once, is to send again on a new connection.
            if not reused or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                raise
            return await self._exchange(raw, timeout)

    async def _exchange(self, raw: bytes, timeout: float) -> Answer:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        assert self.writer is not None
        try:
            self.writer.write(raw)
            return await asyncio.wait_for(self._read(self.reader), timeout)
        except BaseException:
            self.close()  # a connection in an unknown state is not reused
            raise

    async def _read(self, reader: asyncio.StreamReader) -> Answer:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length) if length else b""
        return Answer(status, body)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def build_get(url: str, path: str, headers: dict[str, str]) -> bytes:
    host = urlsplit(url).netloc
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def build_post(url: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    host = urlsplit(url).netloc
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json"]
    head += [f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(head).encode("latin-1") + body


async def drive(
    url: str,
    requests: list[bytes],
    rate: float,
    duration: float,
    *,
    connections: int = 64,
    timeout: float = 10.0,
    on_answer: Callable[[Answer], None] | None = None,
) -> LoadResult:
    """Send `requests` round-robin at `rate` per second for `duration` seconds."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    idle = [Connection(host, port) for _ in range(connections)]
    result = LoadResult(scheduled=int(rate * duration))

    async def one(conn: Connection, raw: bytes, due: float) -> None:
        try:
            answer = await conn.request(raw, timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            result.errors[type(exc).__name__] += 1
        else:
            if 200 <= answer.status < 300:
                result.latencies_ms.append((time.perf_counter() - due) * 1000)
                if on_answer is not None:
                    on_answer(answer)
            else:
                result.errors[f"HTTP {answer.status}"] += 1
        finally:
            idle.append(conn)

    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter() + 0.05
    for n in range(result.scheduled):
        due = start + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            result.lag_ms = max(result.lag_ms, -delay * 1000)
        if not idle:
            result.errors["no free connection"] += 1
            continue
        tasks.append(asyncio.create_task(one(idle.pop(), requests[n % len(requests)], due)))
    result.send_seconds = time.perf_counter() - start
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.close()
    return result


@dataclass
class ClosedLoopResult:
    """Latencies (ms) of successful answers in the order they completed, with when each completed."""

    latencies_ms: list[float] = field(default_factory=list)
    finished_at: list[float] = field(default_factory=list)  # seconds since the start, per latency
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


async def closed_loop(
    url: str, requests: list[bytes], clients: int, duration: float, *, timeout: float = 30.0
) -> ClosedLoopResult:
    """`clients` connections, each sending its next request as soon as its last was answered.

    Client n sends requests[n], requests[n + 1], ... in turn, so clients do not all ask the same
    thing at the same moment. Unlike `drive`, the rate is whatever the server sustains: the
    figure is latency at that many concurrent users.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    result = ClosedLoopResult()
    start = time.perf_counter()
    stop_at = start + duration

    async def client(n: int) -> None:
        conn = Connection(host, port)
        try:
            while time.perf_counter() < stop_at:
                began = time.perf_counter()
                try:
                    answer = await conn.request(requests[n % len(requests)], timeout)
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    result.errors[type(exc).__name__] += 1
                    continue
                finally:
                    n += 1
                now = time.perf_counter()
                if 200 <= answer.status < 300:
                    result.latencies_ms.append((now - began) * 1000)
                    result.finished_at.append(now - start)
                else:
                    result.errors[f"HTTP {answer.status}"] += 1
        finally:
            conn.close()

    await asyncio.gather(*(client(n) for n in range(clients)))
    result.seconds = time.perf_counter() - start
    return result
