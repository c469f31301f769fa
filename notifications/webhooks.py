"""Signed webhooks: the signature receivers verify, and one recorded delivery attempt.

A receiver checks `X-Marketplace-Signature: sha256=<hex>`, the HMAC-SHA256 (shared secret) of
`f"{timestamp}.{body}"`, where the timestamp is `X-Marketplace-Timestamp` (Unix seconds) and the
body is the raw request body; `verify_signature` does both checks. Deliveries are at least once:
`X-Marketplace-Delivery` stays the same across the attempts of one delivery, so receivers can
drop repeats.

Consumer callback URLs are chosen by outsiders, so their deliveries go through core.egress: a
callback host that is, or resolves to, a loopback, private, link-local or otherwise non-public
address is refused at connection time (in production always; elsewhere see
EgressPolicy.for_callbacks), and the delivery fails at once instead of being retried. Governance
URLs are the operator's own configuration and may well be internal: they are not restricted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from core import egress
from core.domain import Audience
from core.settings import WebhookSettings, get_settings
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


def callback_policy(delivery: WebhookDelivery) -> egress.EgressPolicy | None:
    """The egress rules of a delivery: consumers' callbacks are vetted, governance URLs are not (None)."""
    if delivery.audience != Audience.CONSUMERS.value:
        return None
    return egress.EgressPolicy.for_callbacks(get_settings())


def deliver(
    delivery: WebhookDelivery, settings: WebhookSettings, policy: egress.EgressPolicy | None = None
) -> AttemptResult:
    """POST the delivery once (2xx delivers it), record the attempt, and fail it once max_attempts is reached.

    `policy` defaults to callback_policy(delivery). A destination it refuses fails the delivery
    at once: the next attempt would be refused alike, and retrying probes the network for nothing.
    """
    body = encode_body(delivery.payload)
    headers = signed_headers(settings.secret.get_secret_value(), delivery.id, delivery.event_type, body)
    policy = policy if policy is not None else callback_policy(delivery)
    started = time.perf_counter()
    status_code, error, refused = _post(delivery.url, body, headers, settings.timeout_seconds, policy)
    duration_ms = (time.perf_counter() - started) * 1000
    with session_scope() as session:
        row, attempt = webhooks.record_attempt(
            session, delivery.id, status_code=status_code, error=error, duration_ms=duration_ms
        )
        if error is None:
            webhooks.mark_delivered(session, row)
        elif refused or row.attempts >= settings.max_attempts:
            webhooks.mark_failed(session, [row.id])
        return AttemptResult(row.id, attempt.attempt, status_code, error, duration_ms, row.status)


def _client(timeout: float, policy: egress.EgressPolicy | None) -> httpx.Client:
    # Redirects are not followed: the signed body would go to a URL nobody configured.
    if policy is None:
        return httpx.Client(timeout=timeout, follow_redirects=False)
    return egress.client(policy, timeout=timeout)


def _post(
    url: str, body: bytes, headers: dict[str, str], timeout: float, policy: egress.EgressPolicy | None = None
) -> tuple[int | None, str | None, bool]:
    """(status code, error, refused by the egress policy); the error is None only for a 2xx answer."""
    problem = egress.url_problem(url, policy) if policy is not None else None
    if problem is not None:  # a literal private address or localhost: not even a lookup
        return None, f"callback refused: {problem}", True
    try:
        with _client(timeout, policy) as client, client.stream("POST", url, content=body, headers=headers) as response:
            if response.is_success:
                return response.status_code, None, False
            if response.is_redirect:
                return response.status_code, f"redirect to {response.headers.get('location')!r} not followed", False
            return response.status_code, f"HTTP {response.status_code}: {_head(response)}", False
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        refused = egress.refusal(exc)
        if refused is not None:
            return None, f"callback refused: host {refused}", True
        return None, f"{type(exc).__name__}: {exc}", False


def _head(response: httpx.Response) -> str:
    received = b""
    for chunk in response.iter_bytes():
        received += chunk
        if len(received) >= ERROR_BODY_BYTES:
            break
    return received[:ERROR_BODY_BYTES].decode(errors="replace")
