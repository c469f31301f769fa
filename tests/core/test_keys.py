"""API key format and hashing (core/keys.py)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from core.keys import display_hint, hash_secret, new_key, parse_key, secret_matches

PEPPER = "pepper-" * 6


def test_a_new_key_is_recognisable_and_parses_back() -> None:
    issued = new_key(PEPPER)
    assert issued.token.startswith(f"mk_live_{issued.key_id}_")
    key_id, secret = parse_key(issued.token) or ("", "")
    assert key_id == issued.key_id and len(key_id) == 16 and len(secret) == 43
    assert issued.token.endswith(issued.last4) and secret not in repr(issued)
    assert new_key(PEPPER).token != issued.token


def test_only_the_peppered_hmac_is_kept() -> None:
    issued = new_key(PEPPER)
    key_id, secret = parse_key(issued.token) or ("", "")
    expected = hmac.new(PEPPER.encode(), f"{key_id}.{secret}".encode(), hashlib.sha256).hexdigest()
    assert issued.secret_hash == expected == hash_secret(PEPPER, key_id, secret)
    assert secret_matches(PEPPER, key_id, secret, issued.secret_hash)
    assert not secret_matches("other-pepper", key_id, secret, issued.secret_hash)
    assert not secret_matches(PEPPER, "0" * 16, secret, issued.secret_hash), "the hash is bound to its key id"


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "Bearer mk_live_0123456789abcdef_" + "a" * 43,
        "mk_test_0123456789abcdef_" + "a" * 43,
        "mk_live_0123456789ABCDEF_" + "a" * 43,
        "mk_live_0123456789abcdef_" + "a" * 42,
        "mk_live_0123456789abcdef_" + "a" * 42 + "!",
        "mk_live_0123456789abcdef" + "a" * 44,
    ],
)
def test_malformed_keys_do_not_parse(presented: str) -> None:
    assert parse_key(presented) is None


def test_the_display_hint_cannot_be_used() -> None:
    hint = display_hint("0123456789abcdef", "wxyz")
    assert hint == "mk_live_0123456789abcdef_…wxyz" and parse_key(hint) is None
