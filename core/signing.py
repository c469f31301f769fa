"""Signed marketplace calls: how a provider knows a call came from the marketplace, and for whom.

The gateway never forwards the consumer's API key. It adds to every call it makes to a provider:

    X-Marketplace-Consumer:   <consumer id>
    X-Marketplace-Request-Id: <request id (a UUID)>
    X-Marketplace-Signature:  t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=<hex> ...]

Each `v1` is HMAC-SHA256(signing secret, message) over the UTF-8 message

    "<t>\\n<METHOD>\\n<path>\\n<consumer id>\\n<request id>"

with the HTTP method in upper case and the path as sent (no query string). Fields are joined
by newlines, which none of them can contain, so no two different calls share a message. The
signing secret is per service (the provider fetches it once from the marketplace and may rotate
it); while a rotation's grace time runs, the call carries one `v1` per live secret, so a provider
holding either the old or the new secret accepts it. The provider checks that `t` is within a
few minutes of its clock (replays of old calls are refused) and that one `v1` matches, comparing
in constant time: `verify` below does both. The body is protected by TLS between the gateway and
the provider; the signature proves origin and binds the consumer's identity to the call.

Pure functions, no I/O: the gateway signs with them and providers may copy `verify`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence

CONSUMER_HEADER = "X-Marketplace-Consumer"
REQUEST_ID_HEADER = "X-Marketplace-Request-Id"
SIGNATURE_HEADER = "X-Marketplace-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_SECONDS = 300
SECRET_PREFIX = "mks_"  # noqa: S105 (a prefix, not a secret)
MAX_HEADER_LENGTH = 1024  # a few signatures; anything longer is not ours


class SignatureError(Exception):
    """The call's signature is missing, malformed, too old, or matches no secret."""


def new_signing_secret() -> str:
    """A fresh per-service secret (256 random bits, recognisable prefix)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def message(timestamp: int, method: str, path: str, consumer_id: str, request_id: str) -> bytes:
    """The bytes that are signed."""
    return "\n".join((str(timestamp), method.upper(), path, consumer_id, request_id)).encode()


def _mac(secret: str, payload: bytes) -> str:
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def sign(
    signing_secrets: Sequence[str], *, method: str, path: str, consumer_id: str, request_id: str, timestamp: int
) -> str:
    """The X-Marketplace-Signature value: one v1 per secret (current first)."""
    if not signing_secrets:
        raise ValueError("at least one signing secret is needed")
    payload = message(timestamp, method, path, consumer_id, request_id)
    return ",".join([f"t={timestamp}", *(f"{SCHEME}={_mac(s, payload)}" for s in signing_secrets)])


def signed_headers(
    signing_secrets: Sequence[str], *, method: str, path: str, consumer_id: str, request_id: str, timestamp: int
) -> dict[str, str]:
    """The three headers the gateway adds to a call to the provider."""
    signature = sign(
        signing_secrets, method=method, path=path, consumer_id=consumer_id, request_id=request_id, timestamp=timestamp
    )
    return {CONSUMER_HEADER: consumer_id, REQUEST_ID_HEADER: request_id, SIGNATURE_HEADER: signature}


def parse_signature(header: str) -> tuple[int, list[str]]:
    """(timestamp, v1 signatures) of a header value; SignatureError when it is not one."""
    if not header or len(header) > MAX_HEADER_LENGTH:
        raise SignatureError("missing or oversized signature header")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit() and timestamp is None:
            timestamp = int(value)
        elif name == SCHEME and len(value) == 64:
            signatures.append(value.lower())
        # other schemes (a future v2) are ignored, so old verifiers keep working during a migration
    if timestamp is None or not signatures:
        raise SignatureError("the signature header needs t=<unix seconds> and at least one v1=<hex>")
    return timestamp, signatures


def verify(
    header: str,
    signing_secrets: Iterable[str],
    *,
    method: str,
    path: str,
    consumer_id: str,
    request_id: str,
    now: float,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> None:
    """Raise SignatureError unless the header is fresh and one v1 matches one of the secrets."""
    timestamp, signatures = parse_signature(header)
    if abs(now - timestamp) > tolerance_seconds:
        raise SignatureError(f"the signature is {int(now - timestamp)} s old; at most {tolerance_seconds} s allowed")
    payload = message(timestamp, method, path, consumer_id, request_id)
    expected = [_mac(secret, payload) for secret in signing_secrets]
    # Compare every pair, so the time taken does not depend on which one matched.
    matched = False
    for candidate in signatures:
        for mac in expected:
            matched |= hmac.compare_digest(candidate, mac)
    if not matched:
        raise SignatureError("the signature matches no signing secret")
