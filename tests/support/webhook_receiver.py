"""A webhook receiver on 127.0.0.1 that checks signatures as a real one would; it can fail on purpose."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from notifications.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    answered: int


class WebhookReceiver:
    """Answers 200 to POSTs whose signature verifies, 401 to the others.

    `fail_first` answers that many requests with `fail_status` first; `always_fail` answers every
    request with it; `redirect_to` answers 302 to that URL; `delay` waits before answering.
    """

    def __init__(
        self,
        secret: str,
        *,
        fail_first: int = 0,
        always_fail: bool = False,
        fail_status: int = 500,
        redirect_to: str | None = None,
        delay: float = 0.0,
    ) -> None:
        self.secret = secret
        self.fail_first = fail_first
        self.always_fail = always_fail
        self.fail_status = fail_status
        self.redirect_to = redirect_to
        self.delay = delay
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/marketplace"

    def __enter__(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver._handle(self, body)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        if self.delay:
            time.sleep(self.delay)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        verified = verify_signature(
            self.secret, headers.get(TIMESTAMP_HEADER.lower(), ""), body, headers.get(SIGNATURE_HEADER.lower(), "")
        )
        with self._lock:
            if self.always_fail or self.fail_first > 0:
                self.fail_first -= 1
                status = self.fail_status
            elif self.redirect_to:
                status = 302
            else:
                status = 200 if verified else 401
            self.received.append(Received(handler.path, headers, body, verified, status))
        reply = b'{"error": "receiver failing on purpose"}' if status >= 500 else b"{}"
        try:
            handler.send_response(status)
            if status == 302 and self.redirect_to:
                handler.send_header("location", self.redirect_to)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(reply)))
            handler.end_headers()
            handler.wfile.write(reply)
        except OSError:  # the sender timed out and hung up first (the timeout test)
            return
