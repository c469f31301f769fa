"""A fake LLM provider on 127.0.0.1 for unit tests, e2e tests and benchmarks.

Usage::

    with FakeProvider() as provider:              # healthy, plain HTTP
        spec = good_spec(provider.url)            # a full valid service spec pointing at it
        ...
        assert provider.requests["GET /health"] == 1

    with FakeProvider("health_500") as provider: ...   # see `Mode` for the behaviours
    with FakeProvider(tls=True) as provider:           # HTTPS; trust it via SSL_CERT_FILE=provider.ca_path

Routes of the healthy provider:

- ``GET /health``     200 ``{"status": "ok"}``
- ``POST /``          401 without an ``Authorization`` header, 200 with one
- ``GET /v1/models``  200 ``{"data": [{"id": "m1"}]}``
- ``POST /v1/chat/completions``, ``POST /v1/embeddings``: OpenAI-style answers with usage (5 prompt,
  7 completion tokens), server-sent events for ``"stream": true`` (a usage chunk when
  ``stream_options.include_usage`` is set); 401 without ``Authorization``. What a marketplace
  gateway calls (``received`` keeps each such request's headers).
- anything else       404

Every response carries Strict-Transport-Security and X-Content-Type-Options unless
``security_headers=False``. The server is tests.support.loopback_http's (a stdlib
ThreadingHTTPServer in a daemon thread, HTTP/1.1 keep-alive here): no event loop to share with
the test, and it starts in about a millisecond.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Self

from tests.support.certificates import LOOPBACK_NAMES, server_tls
from tests.support.loopback_http import LoopbackHTTPServer, Reply, Request, json_reply
from tests.support.specs import make_spec

Mode = Literal["healthy", "health_500", "open_auth", "slow", "bad_schema", "redirect"]
"""healthy: as documented above; health_500: GET /health answers 500; open_auth: POST / answers 200
without credentials; slow: GET /health waits `delay_ms` (250 ms unless given); bad_schema:
GET /v1/models answers 200 with a body that does not match `provider_openapi`; redirect:
GET /health answers 302 to /v1/models (a client that follows it shows up in `requests`)."""

SLOW_DEFAULT_DELAY_MS = 250
OPENAI_USAGE = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
OPENAI_ANSWERS: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
        "usage": OPENAI_USAGE,
    },
    "/v1/embeddings": {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
        "model": "fake",
        "usage": {"prompt_tokens": 5, "total_tokens": 5},
    },
}


def _chunk(delta: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "fake",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }


_SECURITY_HEADERS = {"Strict-Transport-Security": "max-age=63072000", "X-Content-Type-Options": "nosniff"}


def _events(include_usage: bool) -> Iterator[bytes]:
    """Server-sent events as an OpenAI-style provider sends them; the connection closes after [DONE]."""
    chunks = [_chunk({"role": "assistant", "content": "Hel"}), _chunk({"content": "lo!"})]
    if include_usage:
        chunks.append({**_chunk({}), "choices": [], "usage": OPENAI_USAGE})
    for chunk in chunks:
        yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


class FakeProvider(LoopbackHTTPServer):
    """A real HTTP(S) server on a free port of 127.0.0.1; use it as a context manager."""

    def __init__(
        self,
        mode: Mode = "healthy",
        *,
        delay_ms: int | None = None,
        tls: bool = False,
        security_headers: bool = True,
        host: str = "127.0.0.1",
    ) -> None:
        self.mode: Mode = mode
        self.delay_ms = delay_ms if delay_ms is not None else (SLOW_DEFAULT_DELAY_MS if mode == "slow" else 0)
        self.tls = tls
        self.security_headers = security_headers
        self.requests: Counter[str] = Counter()
        """Requests served, keyed by "METHOD /path" (query string dropped)."""
        self.received: list[dict[str, str]] = []
        """The headers of each OpenAI-style call, in order."""
        self.ca_path: Path | None = None
        """PEM of the CA that signed the server certificate (tls=True only)."""
        self._lock = threading.Lock()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        super().__init__(self._answer, methods=("GET", "POST"), keep_alive=True, name="fake-provider", host=host)

    def start(self) -> Self:
        if self.tls:  # a fresh certificate for each start, removed at stop
            self._tmp = tempfile.TemporaryDirectory(prefix="fake-provider-")
            names = LOOPBACK_NAMES if self.host == "127.0.0.1" else (self.host,)
            self.tls_context, self.ca_path = server_tls(Path(self._tmp.name), names)
        return super().start()

    def stop(self) -> None:
        super().stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _answer(self, request: Request) -> Reply:
        with self._lock:
            self.requests[f"{request.method} {request.route}"] += 1
        if request.method == "GET":
            return self._get(request.route)
        authorized = self.mode == "open_auth" or bool(request.headers.get("Authorization"))
        if request.route not in ("/", *OPENAI_ANSWERS):
            return self._json(404, {"error": "not found"})
        if not authorized:
            return self._json(401, {"error": "missing credentials"}, {"WWW-Authenticate": "Bearer"})
        if request.route == "/":
            return self._json(200, {"id": "resp-1", "output": "hello"})
        with self._lock:
            self.received.append(dict(request.headers.items()))
        body = request.json(empty={})
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            headers = {"Content-Type": "text/event-stream", "Connection": "close"}
            return Reply(200, headers=headers, chunks=_events(include_usage))
        return self._json(200, OPENAI_ANSWERS[request.route])

    def _get(self, route: str) -> Reply:
        if route == "/health":
            time.sleep(self.delay_ms / 1000)
            if self.mode == "health_500":
                return self._json(500, {"status": "error"})
            if self.mode == "redirect":
                return self._json(302, {"status": "moved"}, {"Location": "/v1/models"})
            return self._json(200, {"status": "ok"})
        if route == "/v1/models":
            return self._json(200, {"models": "m1"} if self.mode == "bad_schema" else {"data": [{"id": "m1"}]})
        return self._json(404, {"error": "not found"})

    def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Reply:
        extra = _SECURITY_HEADERS if self.security_headers else {}
        return json_reply(status, body, {**extra, **(headers or {})})


def provider_openapi(provider_url: str) -> dict[str, Any]:
    """A valid OpenAPI 3.1 document of the healthy FakeProvider (local $refs into components)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Fake provider", "version": "1.0.0"},
        "servers": [{"url": provider_url}],
        "paths": {
            "/health": {
                "get": {"operationId": "health", "responses": {"200": {"description": "Up", **_json_body("Health")}}}
            },
            "/v1/models": {
                "get": {
                    "operationId": "listModels",
                    "parameters": [{"name": "limit", "in": "query", "required": False, "schema": {"type": "integer"}}],
                    "responses": {"200": {"description": "Available models", **_json_body("ModelList")}},
                }
            },
            "/": {
                "post": {
                    "operationId": "complete",
                    "security": [{"bearer": []}],
                    "responses": {
                        "200": {"description": "Completion"},
                        "401": {"description": "Missing credentials", **_json_body("Error")},
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Health": _object({"status": {"type": "string"}}),
                "Model": _object({"id": {"type": "string"}}),
                "ModelList": _object({"data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}}}),
                "Error": _object({"error": {"type": "string"}}),
            },
        },
    }


def _json_body(schema_name: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(properties), "properties": properties}


def good_spec(provider_url: str, *, name: str = "fake-chat", version: str = "1.0.0") -> dict[str, Any]:
    """A complete, valid service spec (public, standard support: no approval needed) for the provider."""
    return make_spec(
        name=name,
        version=version,
        description="Fake chat model served by tests.support.provider.FakeProvider",
        provider={"id": "acme", "name": "Acme AI", "contactEmail": "ops@acme.example"},
        tags=["chat", "test"],
        endpoint={"url": provider_url, "healthPath": "/health", "authentication": {"type": "bearer"}},
        openApiSpec=provider_openapi(provider_url),
    )


def main() -> None:
    """Run a provider in the foreground for trying the stack by hand: python -m tests.support.provider."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mode", default="healthy", choices=["healthy", "health_500", "open_auth", "slow", "bad_schema"]
    )
    parser.add_argument("--name", default="my-first-service")
    args = parser.parse_args()
    with FakeProvider(args.mode) as provider:
        print(f"provider on {provider.url}; a spec for it:", file=sys.stderr)
        print(json.dumps(good_spec(provider.url, name=args.name), indent=2))
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
