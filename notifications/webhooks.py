"""Signed webhooks: the signature receivers verify, and one recorded delivery attempt.

A receiver checks `X-Marketplace-Signature: sha256=<hex>`, the HMAC-SHA256 (shared secret) of
`f"{timestamp}.{body}"`, where the timestamp is `X-Marketplace-Timestamp` (Unix seconds) and the
body is the raw request body; `verify_signature` does both checks. Deliveries are at least once:
`X-Marketplace-Delivery` stays the same across the attempts of one delivery, so receivers can
drop repeats.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import httpx

from core.settings import WebhookSettings
from storage.database import session_scope
from storage.models import WebhookDelivery
from storage.repositories import webhooks
from storage.repositories.outbox import EVENT_SCHEMA_VERSION

SIGNATURE_HEADER = "X-Marketplace-Signature"
TIMESTAMP_HEADER = "X-Marketplace-Timestamp"
EVENT_HEADER = "X-Marketplace-Event"
DELIVERY_HEADER = "X-Marketplace-Delivery"
SIGNATURE_PREFIX = "sha256="
USER_AGENT = "llm-marketplace-webhooks/1.0"
DEFAULT_TOLERANCE_SECONDS = 300.0
# Enough of a refusal's body to say why; the rest is not worth storing (or reading).
ERROR_BODY_BYTES = 512


class Audience(StrEnum):
    GOVERNANCE = "governance"
    CONSUMERS = "consumers"


def envelope(event_id: str, event_type: str, service_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """The CloudEvents-style body, shaped like the outbox's events."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "/marketplace/publishing",
        "type": f"marketplace.{event_type}",
        "subject": service_id,
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "dataschemaversion": EVENT_SCHEMA_VERSION,
        "data": data,
    }


def encode_body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes | str,
    header: str,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    *,
    now: float | None = None,
) -> bool:
    """True when `header` signs `body` at `timestamp` and the timestamp is within `tolerance` seconds of now.

    The tolerance bounds replays: a captured request cannot be sent again later with its old signature.
    """
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent_at) > tolerance:
        return False
    raw = body.encode() if isinstance(body, str) else body
    return hmac.compare_digest(sign(secret, timestamp, raw), header.strip())


def signed_headers(secret: str, delivery_id: str, event_type: str, body: bytes) -> dict[str, str]:
    """Headers of one attempt, signed now (each retry is signed afresh, so it passes the replay window)."""
    timestamp = str(int(time.time()))
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        TIMESTAMP_HEADER: timestamp,
        EVENT_HEADER: event_type,
        DELIVERY_HEADER: delivery_id,
    }


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt did, and where that leaves its delivery."""

    delivery_id: str
    attempt: int
    status_code: int | None
    error: str | None
    duration_ms: float
    status: str  # the delivery's status after this attempt: pending, delivered or failed

    @property
    def delivered(self) -> bool:
        return self.status == webhooks.DELIVERED


def deliver(delivery: WebhookDelivery, settings: WebhookSettings) -> AttemptResult:
    """POST the delivery once (2xx delivers it), record the attempt, and fail it once max_attempts is reached."""
    body = encode_body(delivery.payload)
    headers = signed_headers(settings.secret.get_secret_value(), delivery.id, delivery.event_type, body)
    started = time.perf_counter()
    status_code, error = _post(delivery.url, body, headers, settings.timeout_seconds)
    duration_ms = (time.perf_counter() - started) * 1000
    with session_scope() as session:
        row, attempt = webhooks.record_attempt(
            session, delivery.id, status_code=status_code, error=error, duration_ms=duration_ms
        )
        if error is None:
            webhooks.mark_delivered(session, row)
        elif row.attempts >= settings.max_attempts:
            webhooks.mark_failed(session, [row.id])
        return AttemptResult(row.id, attempt.attempt, status_code, error, duration_ms, row.status)


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int | None, str | None]:
    """(status code, error); the error is None only for a 2xx answer."""
    try:
        # Redirects are not followed: the signed body would go to a URL nobody configured.
        with (
            httpx.Client(timeout=timeout, follow_redirects=False) as client,
            client.stream("POST", url, content=body, headers=headers) as response,
        ):
            if response.is_success:
                return response.status_code, None
            if response.is_redirect:
                return response.status_code, f"redirect to {response.headers.get('location')!r} not followed"
            return response.status_code, f"HTTP {response.status_code}: {_head(response)}"
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _head(response: httpx.Response) -> str:
    received = b""
    for chunk in response.iter_bytes():
        received += chunk
        if len(received) >= ERROR_BODY_BYTES:
            break
    return received[:ERROR_BODY_BYTES].decode(errors="replace")
