"""A fake external LLM-Registry on 127.0.0.1: records calls, can fail on purpose."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


class FakeRegistry:
    """POST /api/v1/services registers, PUT /api/v1/services/{id} updates, DELETE removes.

    `fail_first` answers that many requests with `fail_status` before behaving;
    `always_fail` answers every request with `fail_status` (`outage()` / `heal()` switch it while
    running); `fail_methods` limits both to those methods (e.g. {"DELETE"}); `hold_seconds`
    delays every answer (the request is recorded in `calls` first). `failed` lists the calls
    answered with `fail_status`.
    """

    def __init__(
        self,
        *,
        fail_first: int = 0,
        always_fail: bool = False,
        fail_status: int = 503,
        fail_methods: set[str] | None = None,
        hold_seconds: float = 0.0,
    ) -> None:
        self.fail_first = fail_first
        self.always_fail = always_fail
        self.fail_status = fail_status
        self.fail_methods = fail_methods
        self.hold_seconds = hold_seconds
        self.entries: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.failed: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeRegistry:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                registry._handle(self, "POST", body)

            def do_PUT(self) -> None:
                length = int(self.headers.get("content-length", 0))
                registry._handle(self, "PUT", json.loads(self.rfile.read(length) or b"{}"))

            def do_DELETE(self) -> None:
                registry._handle(self, "DELETE", None)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def outage(self, methods: set[str] | None = None) -> None:
        """Answer `fail_status` to every request (of `methods`, when given) until `heal()`."""
        with self._lock:
            self.fail_methods = methods
            self.always_fail = True

    def heal(self) -> None:
        """Behave again: no more failures, no more delay."""
        with self._lock:
            self.always_fail = False
            self.fail_first = 0
            self.fail_methods = None
            self.hold_seconds = 0.0

    def count(self, method: str, *, failed: bool = False) -> int:
        """Requests of `method` received (or only those answered with `fail_status`)."""
        with self._lock:
            return sum(1 for call in (self.failed if failed else self.calls) if call.startswith(f"{method} "))

    def _handle(self, handler: BaseHTTPRequestHandler, method: str, body: dict[str, Any] | None) -> None:
        with self._lock:
            self.calls.append(f"{method} {handler.path}")
            hold = self.hold_seconds
        if hold > 0:
            time.sleep(hold)
        with self._lock:
            failing = self.always_fail or self.fail_first > 0
            if failing and (self.fail_methods is None or method in self.fail_methods):
                self.fail_first -= 1
                self.failed.append(f"{method} {handler.path}")
                return _reply(handler, self.fail_status, {"error": "unavailable"})
            if method == "POST" and handler.path == "/api/v1/services" and body is not None:
                entry_id = f"reg-{uuid.uuid4().hex[:8]}"
                self.entries[entry_id] = body
                return _reply(handler, 200, {"id": entry_id, "status": "registered"})
            entry_id = handler.path.rsplit("/", 1)[-1]
            if method == "PUT" and entry_id in self.entries and body is not None:
                self.entries[entry_id] = {**self.entries[entry_id], **body}
                return _reply(handler, 200, {"id": entry_id, "status": "updated"})
            if method == "DELETE" and self.entries.pop(entry_id, None) is not None:
                return _reply(handler, 204, None)
            return _reply(handler, 404, {"error": "not found"})


def _reply(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any] | None) -> None:
    data = json.dumps(body).encode() if body is not None else b""
    handler.send_response(status)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
