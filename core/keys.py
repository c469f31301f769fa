"""API key format and hashing, shared by the API (issuing keys) and the gateway (checking them).

A key reads `mk_live_<key id>_<secret>`:

- `mk_live_` makes a leaked key recognisable (secret scanners, logs, a support ticket);
- the key id (16 hex characters) is the row's primary key, so the gateway finds the one row to
  compare with instead of hashing and searching;
- the secret is 32 random bytes (256 bits, url-safe base64), shown once and never stored.

Stored is HMAC-SHA256(pepper, "<key id>.<secret>") in hex. A slow password hash (bcrypt,
argon2) protects low-entropy human passwords from guessing; a 256-bit random secret cannot be
guessed either way, and a slow hash would cost tens of milliseconds of CPU on every cache miss of
the gateway's hot path. The pepper (a server secret outside the database) means a stolen copy
of the table alone cannot even be checked against a candidate key; binding the key id into the
MAC means a row's hash cannot be reused for another id.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

KEY_PREFIX = "mk_live_"
HASH_SCHEME = "hmac-sha256"
KEY_ID_BYTES = 8
SECRET_BYTES = 32
_KEY_RE = re.compile(r"^mk_live_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class IssuedKey:
    """A freshly made key: `token` is what the consumer gets once; only `secret_hash` is kept."""

    key_id: str
    token: str
    secret_hash: str
    last4: str

    def __repr__(self) -> str:  # never print the token by accident
        return f"IssuedKey(key_id={self.key_id!r}, last4={self.last4!r})"


def new_key(pepper: str) -> IssuedKey:
    """A new random key id and secret, with the hash to store."""
    key_id = secrets.token_hex(KEY_ID_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    token = f"{KEY_PREFIX}{key_id}_{secret}"
    return IssuedKey(key_id=key_id, token=token, secret_hash=hash_secret(pepper, key_id, secret), last4=secret[-4:])


def parse_key(presented: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, None for anything else (no database work for garbage)."""
    match = _KEY_RE.match(presented)
    if match is None:
        return None
    return match.group("id"), match.group("secret")


def hash_secret(pepper: str, key_id: str, secret: str) -> str:
    """HMAC-SHA256 over "<key id>.<secret>" with the pepper, hex."""
    return hmac.new(pepper.encode(), f"{key_id}.{secret}".encode(), hashlib.sha256).hexdigest()


def secret_matches(pepper: str, key_id: str, secret: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented secret with the stored hash."""
    return hmac.compare_digest(hash_secret(pepper, key_id, secret), stored_hash)


def display_hint(key_id: str, last4: str) -> str:
    """How a key is shown after creation: enough to tell keys apart, nothing to use."""
    return f"{KEY_PREFIX}{key_id}_…{last4}"
