"""A fast local stand-in for an LLM provider's OpenAI-style API, for gateway tests and benchmarks.

asyncio protocol + httptools: canned answers at once, so a benchmark measures the gateway, not
the provider (it shares the cores). Answers POST /v1/chat/completions, /v1/completions,
/v1/embeddings and / (the invoke endpoint) with an OpenAI-style body and usage (5 prompt + 7
completion tokens); `"stream": true` gets server-sent events, with a usage chunk when
`stream_options.include_usage` is set. `mode` changes behaviour for tests: "ok", "error500",
"slow" (waits `delay` s before answering), "hang" (never answers), "close" (drops the
connection), "break" (a stream that stops half-way).

    with LlmProvider() as provider: ...          # in a thread of this process
    python -m tests.support.llm_provider --port 9100   # a process of its own (benchmarks)
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from collections.abc import Iterator
from typing import Any, cast

import httptools
import orjson

USAGE = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
CHAT = orjson.dumps(
    {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there!"}, "finish_reason": "stop"}],
        "usage": USAGE,
    }
)
EMBEDDING = orjson.dumps(
    {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
        "model": "fake",
        "usage": {"prompt_tokens": 5, "total_tokens": 5},
    }
)
WORDS = ["Hel", "lo", " the", "re", "!"]


def _head(status: int, content_type: bytes, length: int | None) -> bytes:
    reason = {200: b"OK", 500: b"Internal Server Error"}.get(status, b"X")
    lines = [b"HTTP/1.1 %d %s" % (status, reason), b"Content-Type: " + content_type]
    lines.append(b"Content-Length: %d" % length if length is not None else b"Transfer-Encoding: chunked")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def stream_events(include_usage: bool) -> Iterator[bytes]:
    """The SSE events of a streamed chat completion."""
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": "fake"}
    for word in WORDS:
        yield _event({**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]})
    yield _event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if include_usage:
        yield _event({**base, "choices": [], "usage": USAGE})
    yield b"data: [DONE]\n\n"


class _Protocol(asyncio.Protocol):
    def __init__(self, provider: LlmProvider) -> None:
        self.provider = provider
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.headers: dict[bytes, bytes] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.body, self.headers = b"", [], {}

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        self.provider.seen(self.url, self.headers, body)
        mode = self.provider.mode
        if mode == "ok" and b'"stream":true' not in body.replace(b" ", b""):
            self._write_whole(200, EMBEDDING if self.url.endswith(b"/embeddings") else CHAT)
        else:
            asyncio.get_running_loop().create_task(self._answer(mode, body))

    def _write_whole(self, status: int, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(_head(status, b"application/json", len(payload)) + payload)

    async def _answer(self, mode: str, body: bytes) -> None:
        assert self.transport is not None
        if mode == "close":
            self.transport.close()
            return
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "slow":
            await asyncio.sleep(self.provider.delay)
        if mode == "error500":
            self._write_whole(500, b'{"error": {"message": "provider exploded"}}')
            return
        if b'"stream":true' not in body.replace(b" ", b""):
            self._write_whole(200, CHAT)
            return
        await self._stream(mode, b"include_usage" in body)

    async def _stream(self, mode: str, include_usage: bool) -> None:
        assert self.transport is not None
        self.transport.write(_head(200, b"text/event-stream", None))
        for n, event in enumerate(stream_events(include_usage)):
            if mode == "break" and n == 2:
                self.transport.close()
                return
            self.transport.write(_chunk(event))
            if self.provider.chunk_delay:
                await asyncio.sleep(self.provider.chunk_delay)
        self.transport.write(b"0\r\n\r\n")


class LlmProvider:
    """The fake provider on a loopback port, in a thread with its own event loop."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.mode = "ok"
        self.delay = 0.0
        self.chunk_delay = 0.0
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.keep = 1000  # requests remembered for assertions
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seen(self, url: bytes, headers: dict[bytes, bytes], body: bytes) -> None:
        if len(self.requests) < self.keep:
            self.requests.append((url.decode(), {k.decode(): v.decode() for k, v in headers.items()}, body))

    async def serve(self) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Protocol(self), "127.0.0.1", self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self._server

    def start(self) -> LlmProvider:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="llm-provider", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> LlmProvider:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="A fast fake OpenAI-style provider on loopback.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    args = parser.parse_args()
    import uvloop

    provider = LlmProvider(args.port)
    provider.keep = 0
    provider.chunk_delay = args.chunk_delay

    async def run() -> None:
        server = await provider.serve()
        await server.serve_forever()

    uvloop.run(run())


if __name__ == "__main__":
    main()
