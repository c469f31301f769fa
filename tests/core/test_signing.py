"""The signed-call scheme providers verify (core/signing.py)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from core import signing
from core.signing import SignatureError, new_signing_secret, sign, signed_headers, verify

CALL = {"method": "post", "path": "/v1/chat/completions", "consumer_id": "alice", "request_id": "7f0c7a52-1"}
NOW = 1_800_000_000


def test_the_signature_is_the_documented_hmac() -> None:
    header = sign(["s3cret"], timestamp=NOW, **CALL)
    expected = hmac.new(
        b"s3cret", b"1800000000\nPOST\n/v1/chat/completions\nalice\n7f0c7a52-1", hashlib.sha256
    ).hexdigest()
    assert header == f"t={NOW},v1={expected}"


def test_a_signed_call_verifies_within_the_tolerance() -> None:
    header = sign(["s3cret"], timestamp=NOW, **CALL)
    verify(header, ["s3cret"], now=NOW + 299, **CALL)
    verify(header, ["s3cret"], now=NOW - 299, **CALL)  # the provider's clock may be behind
    with pytest.raises(SignatureError, match="old"):
        verify(header, ["s3cret"], now=NOW + 301, **CALL)


@pytest.mark.parametrize(
    "changed",
    [
        {"method": "GET"},
        {"path": "/v1/embeddings"},
        {"consumer_id": "mallory"},
        {"request_id": "7f0c7a52-2"},
    ],
)
def test_any_changed_field_breaks_the_signature(changed: dict[str, str]) -> None:
    header = sign(["s3cret"], timestamp=NOW, **CALL)
    with pytest.raises(SignatureError, match="matches no"):
        verify(header, ["s3cret"], now=NOW, **{**CALL, **changed})


def test_fields_cannot_be_shifted_between_each_other() -> None:
    """A dot-joined message would sign path '/x.y' + consumer 'z' like path '/x' + consumer 'y.z'."""
    header = sign(["k"], timestamp=NOW, method="GET", path="/x.y", consumer_id="z", request_id="r")
    with pytest.raises(SignatureError):
        verify(header, ["k"], now=NOW, method="GET", path="/x", consumer_id="y.z", request_id="r")


def test_a_rotation_signs_with_both_secrets_and_either_verifies() -> None:
    old, new = new_signing_secret(), new_signing_secret()
    header = sign([new, old], timestamp=NOW, **CALL)
    assert header.count("v1=") == 2
    verify(header, [old], now=NOW, **CALL)
    verify(header, [new], now=NOW, **CALL)
    with pytest.raises(SignatureError):
        verify(header, [new_signing_secret()], now=NOW, **CALL)


@pytest.mark.parametrize(
    "header",
    ["", "v1=" + "0" * 64, f"t={NOW}", f"t=abc,v1={'0' * 64}", f"t={NOW},v1=short", "x" * 2000],
)
def test_malformed_headers_are_refused(header: str) -> None:
    with pytest.raises(SignatureError):
        verify(header, ["k"], now=NOW, **CALL)


def test_unknown_schemes_are_ignored_beside_v1() -> None:
    header = sign(["k"], timestamp=NOW, **CALL) + ",v2=" + "f" * 80
    verify(header, ["k"], now=NOW, **CALL)


def test_headers_and_secrets() -> None:
    headers = signed_headers(["k"], timestamp=NOW, **CALL)
    assert headers[signing.CONSUMER_HEADER] == "alice"
    assert headers[signing.REQUEST_ID_HEADER] == "7f0c7a52-1"
    assert headers[signing.SIGNATURE_HEADER].startswith(f"t={NOW},v1=")
    secret = new_signing_secret()
    assert secret.startswith("mks_") and len(secret) > 40 and secret != new_signing_secret()
    with pytest.raises(ValueError, match="at least one"):
        sign([], timestamp=NOW, **CALL)
