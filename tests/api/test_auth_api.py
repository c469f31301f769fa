"""Who gets in and what they see: token verification (HS256, RS256, JWKS), ownership, admin suspension."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from jwt.algorithms import RSAAlgorithm
from pydantic import ValidationError

from api.auth import MALFORMED as MALFORMED_TOKEN
from api.auth import Principal, Role, TokenVerifier
from api.publishing import refresh_search_entry
from core.errors import UnauthorizedError
from core.settings import Settings
from storage.database import session_scope
from storage.repositories import audit, services, versions
from storage.repositories.services import Actor
from tests.support import auth
from tests.support.app import reconfigure
from tests.support.specs import make_spec

SERVICES = "/api/v1/services"


def live_service(name: str = "acme-chat", provider: str = "acme") -> str:
    """A service already through the pipeline (active and indexed), written through the repositories."""
    spec = make_spec(name=name)
    spec["provider"] = {"id": provider, "name": provider.title()}
    with session_scope() as session:
        service = services.create_submitted(session, spec, Actor(provider, "provider"))
        service.status = "active"
        for version in versions.for_service(session, service.id):
            version.status = "active"
        service_id = service.id
    refresh_search_entry(service_id)
    return service_id


def submitted(client: TestClient, name: str = "acme-chat") -> str:
    response = client.post(SERVICES, json=make_spec(name=name), headers=auth.provider())
    assert response.status_code == 202, response.text
    return str(response.json()["serviceId"])


def rsa_pem() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def public_jwk(public_pem: str) -> dict[str, Any]:
    key = serialization.load_pem_public_key(public_pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    return RSAAlgorithm.to_jwk(key, as_dict=True)


def hs256_by_hand(payload: dict[str, Any], secret: bytes) -> str:
    """An HS256 JWT signed with any bytes (PyJWT itself refuses a PEM key as an HMAC secret)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "gov-1", "role": "governance", "iat": now, "exp": now + 300, **extra}


def approvals(client: TestClient, token: str) -> Any:
    return client.get("/api/v1/approvals", headers={"Authorization": f"Bearer {token}"})


# --- token verification -------------------------------------------------------------------------------


def test_hs256_refuses_none_swapped_and_roleless_tokens(anonymous: TestClient) -> None:
    client = anonymous
    assert approvals(client, jwt.encode(claims(), "x" * 40, algorithm="HS256")).status_code == 401, "foreign secret"
    unsigned = jwt.encode(claims(), None, algorithm="none")  # type: ignore[arg-type]
    refused = approvals(client, unsigned)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert "invalid" in refused.json()["error"]["message"]

    secret = Settings().auth.jwt_secret.get_secret_value()
    roleless = {k: v for k, v in claims().items() if k != "role"}
    missing = approvals(client, jwt.encode(roleless, secret, algorithm="HS256"))
    assert missing.status_code == 401
    assert "role" in missing.json()["error"]["message"]
    unknown = approvals(client, jwt.encode(claims(role="root"), secret, algorithm="HS256"))
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (403, "forbidden")
    expired = approvals(client, jwt.encode(claims(exp=int(time.time()) - 120), secret, algorithm="HS256"))
    assert (expired.status_code, expired.json()["error"]["message"]) == (401, "the bearer token has expired")
    assert approvals(client, jwt.encode(claims(), secret, algorithm="HS256")).status_code == 200


def test_a_remembered_token_is_refused_once_expired_and_a_tampered_one_is_checked_in_full() -> None:
    settings = Settings().auth.model_copy(update={"leeway_seconds": 0})
    verifier = TokenVerifier(settings)
    secret = settings.jwt_secret.get_secret_value()
    expires = int(time.time()) + 2
    token = jwt.encode(claims(exp=expires), secret, algorithm="HS256")
    assert verifier.decode(token) == Principal("gov-1", Role.GOVERNANCE)
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[:-4]}AAAA"
    with pytest.raises(UnauthorizedError, match="invalid"):
        verifier.decode(forged)  # the same claims with another signature: verified, not remembered
    swapped = jwt.encode(claims(role="admin", exp=int(time.time()) + 60), "x" * 40, algorithm="HS256")
    with pytest.raises(UnauthorizedError, match="invalid"):
        verifier.decode(swapped)
    assert verifier.decode(token).role is Role.GOVERNANCE  # remembered: no second check
    time.sleep(max(0.0, expires - time.time()) + 0.1)
    with pytest.raises(UnauthorizedError, match="expired"):
        verifier.decode(token)


MALFORMED = [
    "not-a-jwt",
    "a.b",
    "a.b.c.d",
    "a.b.c",  # three segments, but not base64url of JSON
    "eyJhbGciOiJIUzI1NiJ9.!!!.c2ln",
    "bm90IGpzb24.e30.c2ln",  # a header that is not JSON
    "W10.e30.c2ln",  # a JSON array as header
    "e30.e30.sig=",  # padding is not base64url
    "héllo.wörld.sig",
    "x" * 5000,
]


@pytest.mark.parametrize("token", MALFORMED)
def test_a_malformed_token_is_refused_plainly(token: str, tmp_path: Path) -> None:
    settings = Settings().auth
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**public_jwk(rsa_pem()[1]), "kid": "k1"}]}))
    # With a key set the header is read first, to pick the key by its kid.
    with_jwks = settings.model_copy(update={"jwt_algorithm": "RS256", "jwks_file": tmp_path / "jwks.json"})
    for verifier in (TokenVerifier(settings), TokenVerifier(with_jwks)):
        with pytest.raises(UnauthorizedError) as refused:
            verifier.decode(token)
        assert refused.value.message == MALFORMED_TOKEN


@pytest.fixture
def rs256_app(
    tmp_path: Path, database_url: str, anonymous: TestClient, monkeypatch: pytest.MonkeyPatch
) -> tuple[TestClient, str, str]:
    """The app verifying RS256 tokens with a public key file; returns (client, private PEM, public PEM)."""
    private, public = rsa_pem()
    (tmp_path / "public.pem").write_text(public)
    monkeypatch.setenv("MARKETPLACE_AUTH__JWT_ALGORITHM", "RS256")
    monkeypatch.setenv("MARKETPLACE_AUTH__JWT_PUBLIC_KEY_FILE", str(tmp_path / "public.pem"))
    monkeypatch.setenv("MARKETPLACE_AUTH__JWT_ISSUER", "https://idp.example")
    monkeypatch.setenv("MARKETPLACE_AUTH__JWT_AUDIENCE", "marketplace")
    reconfigure(anonymous)
    return anonymous, private, public


def test_rs256_with_a_public_key_file(rs256_app: tuple[TestClient, str, str]) -> None:
    client, private, public = rs256_app
    good = claims(iss="https://idp.example", aud="marketplace")
    assert approvals(client, jwt.encode(good, private, algorithm="RS256")).status_code == 200

    other_private, _ = rsa_pem()
    assert approvals(client, jwt.encode(good, other_private, algorithm="RS256")).status_code == 401, "other key"
    # Algorithm confusion: an HS256 token whose HMAC secret is the (public) verification key.
    assert approvals(client, hs256_by_hand(good, public.encode())).status_code == 401, "HS256 with the public key"
    for wrong in ({"iss": "https://evil.example", "aud": "marketplace"}, {"iss": "https://idp.example", "aud": "x"}):
        assert approvals(client, jwt.encode(claims(**wrong), private, algorithm="RS256")).status_code == 401


def test_rs256_with_a_jwks_file_picks_the_key_by_kid(
    tmp_path: Path, database_url: str, anonymous: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = {kid: rsa_pem() for kid in ("2026-a", "2026-b")}
    jwks = {"keys": [{**public_jwk(public), "kid": kid, "alg": "RS256"} for kid, (_, public) in keys.items()]}
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    monkeypatch.setenv("MARKETPLACE_AUTH__JWT_ALGORITHM", "RS256")
    monkeypatch.setenv("MARKETPLACE_AUTH__JWKS_FILE", str(tmp_path / "jwks.json"))
    reconfigure(anonymous)
    for kid, (private, _) in keys.items():
        token = jwt.encode(claims(), private, algorithm="RS256", headers={"kid": kid})
        assert approvals(anonymous, token).status_code == 200, kid
    swapped = jwt.encode(claims(), keys["2026-a"][0], algorithm="RS256", headers={"kid": "2026-b"})
    assert approvals(anonymous, swapped).status_code == 401
    unknown = approvals(anonymous, jwt.encode(claims(), keys["2026-a"][0], algorithm="RS256", headers={"kid": "zz"}))
    assert unknown.status_code == 401
    assert "key id" in unknown.json()["error"]["message"]


def test_unsafe_auth_settings_are_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="RS256 needs"):
        Settings(auth={"jwt_algorithm": "RS256"})
    with pytest.raises(ValidationError, match="jwt_secret must be set"):
        Settings(environment="test")
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(
            environment="production",
            auth={"jwt_secret": "short"},
            database={"url": "postgresql+psycopg://x/y"},
        )


def test_the_token_command_prints_a_working_token(anonymous: TestClient) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "api.auth", "--sub", "gov-7", "--role", "governance", "--ttl", "600"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert approvals(anonymous, printed).status_code == 200


# --- who sees and changes what --------------------------------------------------------------------


def test_a_provider_publishes_only_as_itself(anonymous: TestClient) -> None:
    client = anonymous
    spec = make_spec()
    assert client.post(SERVICES, json=spec).status_code == 401
    assert client.post(SERVICES, json=spec, headers=auth.consumer()).status_code == 403
    impostor = client.post(SERVICES, json=spec, headers=auth.provider("mallory"))
    assert impostor.status_code == 403
    assert impostor.json()["error"]["details"][0]["pointer"] == "/provider/id"
    assert client.post(SERVICES, json=spec, headers=auth.admin()).status_code == 202, "admin publishes for anyone"
    assert client.get(SERVICES, headers=auth.admin()).json()["total"] == 1


def test_publishing_details_are_for_the_owner_and_staff(anonymous: TestClient) -> None:
    client = anonymous
    pending = submitted(client)
    status = f"{SERVICES}/{pending}/status"
    for path in (f"{SERVICES}/{pending}", status, f"{SERVICES}/{pending}/versions", f"{SERVICES}/{pending}/history"):
        assert client.get(path, headers=auth.provider()).status_code == 200, path
        assert client.get(path, headers=auth.governance()).status_code == 200, path
        # Not live: to everyone else it does not exist.
        for other in ({}, auth.provider("mallory"), auth.consumer()):
            response = client.get(path, headers=other)
            assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found"), (path, other)
    changes: list[tuple[str, str, dict[str, Any] | None]] = [
        ("PUT", f"{SERVICES}/{pending}", {"description": "hijacked"}),
        ("DELETE", f"{SERVICES}/{pending}", None),
        ("POST", f"{SERVICES}/{pending}/versions", make_spec(version="2.0.0")),
    ]
    for method, path, body in changes:
        assert client.request(method, path, json=body, headers=auth.provider("mallory")).status_code == 404
        governance = client.request(method, path, json=body, headers=auth.governance())
        assert governance.status_code == 403, "governance decides approvals, it does not edit"

    live = live_service("acme-live")
    assert client.get(f"{SERVICES}/{live}").status_code == 200, "the catalogue is public"
    assert client.get(f"{SERVICES}/{live}/status").status_code == 401
    assert client.get(f"{SERVICES}/{live}/status", headers=auth.provider("mallory")).status_code == 403
    hijack = client.put(f"{SERVICES}/{live}", json={"description": "hijacked"}, headers=auth.provider("mallory"))
    assert hijack.status_code == 403
    assert client.get(f"{SERVICES}/{live}").json()["description"] != "hijacked"


def test_listings_show_each_caller_what_it_may_see(anonymous: TestClient) -> None:
    client = anonymous
    submitted(client)
    live_service("acme-live")
    live_service("globex-live", provider="globex")

    def names(headers: dict[str, str], **params: str) -> set[str]:
        response = client.get(SERVICES, headers=headers, params=params)
        assert response.status_code == 200, response.text
        return {item["name"] for item in response.json()["items"]}

    assert names({}) == names(auth.consumer()) == {"acme-live", "globex-live"}
    assert names({}, status="submitted") == set()
    assert names(auth.provider()) == {"acme-chat", "acme-live"}
    assert names(auth.provider("globex")) == {"globex-live"}
    assert names(auth.governance()) == names(auth.admin()) == {"acme-chat", "acme-live", "globex-live"}
    other = client.get(SERVICES, params={"provider": "globex"}, headers=auth.provider())
    assert (other.status_code, other.json()["error"]["details"][0]["pointer"]) == (403, "provider")


# --- suspension ------------------------------------------------------------------------------------


def search_names(client: TestClient) -> set[str]:
    response = client.post(f"{SERVICES}/search", json={"query": "chat"})
    return {hit["name"] for hit in response.json()["items"]}


def test_admin_suspends_and_lifts(anonymous: TestClient) -> None:
    client = anonymous
    service_id = live_service("acme-chat")
    assert search_names(client) == {"acme-chat"}
    reason = {"reason": "serving malware links"}
    suspension = f"{SERVICES}/{service_id}/suspension"
    assert client.post(suspension, json=reason, headers=auth.provider()).status_code == 403
    assert client.post(suspension, json=reason, headers=auth.governance()).status_code == 403
    assert client.post(suspension, json={"reason": ""}, headers=auth.admin()).status_code == 422

    admin = {**auth.admin("ops-1"), "User-Agent": "ops-console/3"}
    suspended = client.post(suspension, json=reason, headers=admin)
    assert (suspended.status_code, suspended.json()["status"]) == (200, "suspended")
    assert search_names(client) == set(), "out of search at once"
    assert client.get(f"{SERVICES}/{service_id}").status_code == 404, "out of the public catalogue"
    assert client.get(f"{SERVICES}/{service_id}", headers=auth.provider()).json()["status"] == "suspended"
    new_version = client.post(
        f"{SERVICES}/{service_id}/versions", json=make_spec(version="1.1.0"), headers=auth.provider()
    )
    assert new_version.status_code == 409, "no new versions while suspended"
    assert client.post(suspension, json=reason, headers=auth.admin()).status_code == 409

    with session_scope() as session:
        entry = audit.for_service(session, service_id)[-1]
        assert (entry.action, entry.actor, entry.actor_role, entry.reason) == (
            "status_changed",
            "ops-1",
            "admin",
            "serving malware links",
        )
        assert (entry.actor_ip, entry.user_agent) == ("testclient", "ops-console/3")
        assert (entry.before, entry.after) == ({"status": "active"}, {"status": "suspended"})

    lifted = client.delete(suspension, headers=auth.admin())
    assert (lifted.status_code, lifted.json()["status"]) == (200, "active")
    assert search_names(client) == {"acme-chat"}
    assert client.delete(suspension, headers=auth.admin()).status_code == 409
