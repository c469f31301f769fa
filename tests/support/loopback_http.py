"""One loopback HTTP(S) server for the fakes in tests/support and for tests that need a server.

    def answer(request: Request) -> Reply:
        return json_reply(200, {"status": "ok"})

    with LoopbackHTTPServer(answer) as server:        # http://127.0.0.1:<free port>
        httpx.get(server.url + "/health")

A stdlib ThreadingHTTPServer on a free port of 127.0.0.1, served from a daemon thread: no event
loop to share with the test, and it starts in about a millisecond. Each request is read whole (its
body by Content-Length), handed to `answer` in the request's own thread, and the Reply written
back with its Content-Length. A fake keeps its own state and lock; the server keeps none.

- `methods`: the others get the stdlib's `501 Unsupported method`, as a handler without them would.
- `tls`: serve HTTPS with that context (tests.support.certificates makes one).
- `keep_alive`: HTTP/1.1 with persistent connections (latency probes measure requests, not
  connects); otherwise HTTP/1.0, one request a connection.
"""

from __future__ import annotations

import json
import ssl
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    """As sent, with the query string."""
    headers: Message
    """Case-insensitive: `request.headers.get("authorization")`."""
    body: bytes

    @property
    def route(self) -> str:
        """The path without the query string."""
        return self.path.split("?", 1)[0]

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)

    def json(self, empty: Any = None) -> Any:
        """The body parsed as JSON; `empty` when there is no body."""
        return json.loads(self.body) if self.body else empty


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    chunks: Iterable[bytes] | None = None
    """Instead of `body`: written and flushed one by one, without a Content-Length, and the
    connection closed after the last (server-sent events)."""


def json_reply(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Reply:
    """`body` as JSON (None: an empty body) with Content-Type application/json and `headers`."""
    data = b"" if body is None else json.dumps(body).encode()
    return Reply(status, data, {"Content-Type": "application/json", **(headers or {})})


Answer = Callable[[Request], Reply]


class LoopbackHTTPServer:
    """A real HTTP(S) server on a free port of 127.0.0.1; use it as a context manager.

    A fake with state of its own subclasses it and hands its own answering method to `__init__`.
    """

    def __init__(
        self,
        answer: Answer,
        *,
        methods: Iterable[str] = ALL_METHODS,
        tls: ssl.SSLContext | None = None,
        keep_alive: bool = False,
        name: str = "loopback-http",
        host: str = "127.0.0.1",
    ) -> None:
        self.tls_context = tls
        self.host = host  # another local address only for tests that make their own (network namespaces)
        attributes: dict[str, Any] = {f"do_{method}": _Handler.serve for method in methods}
        attributes["protocol_version"] = "HTTP/1.1" if keep_alive else "HTTP/1.0"
        self._handler = type("Handler", (_Handler,), attributes)
        self._on_request = answer
        self._name = name
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port it was started on; still known once stopped (a test may call it when gone)."""
        if self._port is None:
            raise RuntimeError(f"{self._name} is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. http://127.0.0.1:54321."""
        return f"{'https' if self.tls_context else 'http'}://{self.host}:{self.port}"

    def start(self) -> Self:
        self._server = _Server(self._handler, self._on_request, self.tls_context, self.host)
        self._port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=self._name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None:
            server.shutdown()  # serve_forever returns, so the thread ends
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], answer: Answer, tls: ssl.SSLContext | None, host: str
    ) -> None:
        super().__init__((host, 0), handler)
        self.answer = answer
        if tls is not None:
            # The handshake is deferred to the request thread (finish_request) so a client that
            # rejects the certificate cannot stall the accept loop.
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # the client gave up or hung up first (a timeout test, say): not worth a traceback
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
    timeout = 5  # an idle or silent connection ends instead of holding a thread
    # Headers and body go out in two writes; with Nagle on, keep-alive requests would wait for a
    # delayed ACK and every latency sample after the first would read ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""  # read whole, or keep-alive breaks
        reply = self.server.answer(Request(self.command, self.path, self.headers, body))
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.chunks is not None:
            self.end_headers()
            for chunk in reply.chunks:
                self.wfile.write(chunk)
                self.wfile.flush()
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet
