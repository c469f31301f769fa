"""A fake external LLM-Registry on 127.0.0.1: records calls, can fail on purpose."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from tests.support.loopback_http import LoopbackHTTPServer, Reply, Request, json_reply


class FakeRegistry(LoopbackHTTPServer):
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
        super().__init__(self._answer, methods=("POST", "PUT", "DELETE"), name="fake-registry")

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

    def _answer(self, request: Request) -> Reply:
        method, path = request.method, request.path
        body: dict[str, Any] | None = None if method == "DELETE" else request.json(empty={})
        with self._lock:
            self.calls.append(f"{method} {path}")
            hold = self.hold_seconds
        if hold > 0:
            time.sleep(hold)
        with self._lock:
            failing = self.always_fail or self.fail_first > 0
            if failing and (self.fail_methods is None or method in self.fail_methods):
                self.fail_first -= 1
                self.failed.append(f"{method} {path}")
                return json_reply(self.fail_status, {"error": "unavailable"})
            if method == "POST" and path == "/api/v1/services" and body is not None:
                entry_id = f"reg-{uuid.uuid4().hex[:8]}"
                self.entries[entry_id] = body
                return json_reply(200, {"id": entry_id, "status": "registered"})
            entry_id = path.rsplit("/", 1)[-1]
            if method == "PUT" and entry_id in self.entries and body is not None:
                self.entries[entry_id] = {**self.entries[entry_id], **body}
                return json_reply(200, {"id": entry_id, "status": "updated"})
            if method == "DELETE" and self.entries.pop(entry_id, None) is not None:
                return json_reply(204, None)
            return json_reply(404, {"error": "not found"})
