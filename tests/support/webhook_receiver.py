"""A webhook receiver on 127.0.0.1 that checks signatures as a real one would; it can fail on purpose."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from notifications.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from tests.support.loopback_http import LoopbackHTTPServer, Reply, Request, json_reply


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    answered: int


class WebhookReceiver(LoopbackHTTPServer):
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
        super().__init__(self._answer, methods=("POST",), name="webhook-receiver")

    @property
    def url(self) -> str:
        return f"{super().url}/hooks/marketplace"

    def _answer(self, request: Request) -> Reply:
        if self.delay:
            time.sleep(self.delay)
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified = verify_signature(
            self.secret,
            headers.get(TIMESTAMP_HEADER.lower(), ""),
            request.body,
            headers.get(SIGNATURE_HEADER.lower(), ""),
        )
        with self._lock:
            if self.always_fail or self.fail_first > 0:
                self.fail_first -= 1
                status = self.fail_status
            elif self.redirect_to:
                status = 302
            else:
                status = 200 if verified else 401
            self.received.append(Received(request.path, headers, request.body, verified, status))
        if status >= 500:
            return json_reply(status, {"error": "receiver failing on purpose"})
        return json_reply(status, {}, {"location": self.redirect_to} if status == 302 and self.redirect_to else None)
