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
``security_headers=False``. The server is a stdlib ThreadingHTTPServer in a daemon thread:
no event loop to share with the test, and it starts in about a millisecond.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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


class FakeProvider:
    """A real HTTP(S) server on a free port of 127.0.0.1; use it as a context manager."""

    def __init__(
        self, mode: Mode = "healthy", *, delay_ms: int | None = None, tls: bool = False, security_headers: bool = True
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
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. http://127.0.0.1:54321."""
        if self._server is None:
            raise RuntimeError("FakeProvider is not started")
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeProvider:
        self._server = _Server(("127.0.0.1", 0), _Handler, self, self._tls_context() if self.tls else None)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-provider", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _count(self, key: str) -> None:
        with self._lock:
            self.requests[key] += 1

    def _tls_context(self) -> ssl.SSLContext:
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-provider-")
        ca_path, cert_path, key_path = _write_certificates(Path(self._tmp.name))
        self.ca_path = ca_path
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert_path, key_path)
        return ctx


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        provider: FakeProvider,
        tls: ssl.SSLContext | None,
    ) -> None:
        super().__init__(address, handler)
        self.provider = provider
        if tls is not None:
            # The handshake is deferred to the request thread (finish_request) so a client that
            # rejects the certificate cannot stall the accept loop.
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client gave up (a timeout test, say): not worth a traceback
        super().handle_error(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(5)
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError):
                return  # the client refused our certificate: that is what some tests want
        super().finish_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so latency probes measure requests, not handshakes
    timeout = 5
    # Headers and body go out in two writes; with Nagle on, keep-alive requests would wait for a
    # delayed ACK and every latency sample after the first would read ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        provider = self._provider("GET")
        path = self.path.split("?", 1)[0]
        if path == "/health":
            time.sleep(provider.delay_ms / 1000)
            if provider.mode == "health_500":
                self._send(500, {"status": "error"})
            elif provider.mode == "redirect":
                self._send(302, {"status": "moved"}, {"Location": "/v1/models"})
            else:
                self._send(200, {"status": "ok"})
        elif path == "/v1/models":
            body: dict[str, Any] = {"models": "m1"} if provider.mode == "bad_schema" else {"data": [{"id": "m1"}]}
            self._send(200, body)
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        provider = self._provider("POST")
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))  # drain, or keep-alive breaks
        path = self.path.split("?", 1)[0]
        authorized = provider.mode == "open_auth" or bool(self.headers.get("Authorization"))
        if path not in ("/", *OPENAI_ANSWERS):
            self._send(404, {"error": "not found"})
        elif not authorized:
            self._send(401, {"error": "missing credentials"}, {"WWW-Authenticate": "Bearer"})
        elif path == "/":
            self._send(200, {"id": "resp-1", "output": "hello"})
        else:
            with provider._lock:
                provider.received.append(dict(self.headers.items()))
            body = json.loads(raw or b"{}")
            if body.get("stream"):
                self._stream(bool((body.get("stream_options") or {}).get("include_usage")))
            else:
                self._send(200, OPENAI_ANSWERS[path])

    def _stream(self, include_usage: bool) -> None:
        """Server-sent events as an OpenAI-style provider sends them; the connection closes after [DONE]."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        chunks = [_chunk({"role": "assistant", "content": "Hel"}), _chunk({"content": "lo!"})]
        if include_usage:
            chunks.append({**_chunk({}), "choices": [], "usage": OPENAI_USAGE})
        for chunk in chunks:
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True

    def _provider(self, method: str) -> FakeProvider:
        provider = self.server.provider
        provider._count(f"{method} {self.path.split('?', 1)[0]}")
        return provider

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        extra = dict(_SECURITY_HEADERS) if self.server.provider.security_headers else {}
        for name, value in {**extra, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


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


def _write_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1/localhost signed by it.

    A separate CA (rather than one self-signed leaf) keeps strict X.509 verification happy.
    """
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "FakeProvider test CA")])
    now = dt.datetime.now(dt.UTC)
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    leaf = (
        _builder(leaf_name, ca_name, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(san, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: dt.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
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
