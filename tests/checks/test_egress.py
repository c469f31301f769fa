"""SSRF guard (core/egress.py) for provider endpoints and consumer webhook callbacks.

Only loopback traffic: public names are never looked up (the resolver is replaced), and a
"public" address is reached through the connection seam `EgressBackend._open`, which the tests
point at a loopback server; it refuses to dial anything else.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from pydantic import SecretStr, ValidationError

import api.routes.webhooks as webhook_routes
from checks.endpoint_checks import check_auth, check_health, check_latency, check_security
from checks.endpoint_conformance import check_conformance
from checks.endpoint_suite import transient
from core import egress
from core.domain import Outcome, Severity
from core.egress import EgressPolicy, EgressRefused
from core.settings import AuthSettings, DatabaseSettings, EndpointTestSettings, Environment, Settings
from tests.support.certificates import server_tls
from tests.support.loopback_http import LoopbackHTTPServer, Reply, Request, json_reply
from tests.support.provider import good_spec
from tests.support.secrets import CONSUMPTION

ALL_CHECKS = (check_health, check_auth, check_conformance, check_security, check_latency)
PUBLIC_V4 = "8.8.8.8"  # never dialled: the connection seam maps it to a loopback server
PROD = Settings(
    environment=Environment.PRODUCTION,
    database=DatabaseSettings(url="postgresql+psycopg://u:p@db.example/marketplace"),
    auth=AuthSettings(jwt_secret=SecretStr("a-real-production-secret-of-32-characters-or-more")),
    endpoint_tests=EndpointTestSettings(timeout_seconds=3, latency_samples=2),
    consumption=CONSUMPTION,
)
DEV_INSECURE = Settings(endpoint_tests=EndpointTestSettings(allow_insecure_endpoints=True, timeout_seconds=3))
STRICT = EgressPolicy(allow_private=False)


# --- loopback servers and network seams ------------------------------------------------------------


class Server(LoopbackHTTPServer):
    """A loopback HTTP(S) server answering every request with `status` and `headers`; records requests."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None, tls: ssl.SSLContext | None = None):
        self.status, self.headers = status, headers or {}
        self.requests: list[tuple[str, str, str]] = []  # (method, path, Host header)
        super().__init__(self._answer, methods=("GET", "POST"), tls=tls, keep_alive=True)

    def _answer(self, request: Request) -> Reply:
        self.requests.append((request.method, request.path, request.headers.get("Host", "")))
        return json_reply(self.status, {"status": "ok"}, self.headers)


class Network:
    """The resolver and the dialler of core.egress, replaced: names answer from `answers`, and the
    "public" PUBLIC_V4 is dialled at 127.0.0.1 (nothing else is dialled as given but loopback)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.answers: dict[str, list[list[str]]] = {}  # name -> one list of addresses per lookup
        self.lookups: list[str] = []
        self.dialled: list[tuple[str, int]] = []
        monkeypatch.setattr(egress, "_getaddrinfo", self._getaddrinfo)
        original = egress.EgressBackend._open
        network = self

        def _open(self: egress.EgressBackend, ip: egress.IPAddress, port: int, *args: Any) -> httpcore.NetworkStream:
            network.dialled.append((str(ip), port))
            if str(ip) == PUBLIC_V4:
                ip = ipaddress.IPv4Address("127.0.0.1")
            if not ip.is_loopback:
                raise AssertionError(f"a test tried to dial {ip}")
            return original(self, ip, port, *args)

        monkeypatch.setattr(egress.EgressBackend, "_open", _open)

    def answer(self, name: str, *lookups: list[str]) -> None:
        self.answers[name] = list(lookups)

    def _getaddrinfo(self, host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        self.lookups.append(host)
        if host not in self.answers or not self.answers[host]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        addresses = self.answers[host].pop(0) if len(self.answers[host]) > 1 else self.answers[host][0]
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses
        ]


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch) -> Network:
    return Network(monkeypatch)


@pytest.fixture
def tmp_folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="egress-") as folder:
        yield Path(folder)


# --- classification without DNS ------------------------------------------------------------------

FORBIDDEN_HOSTS = [
    "127.0.0.1",
    "127.9.9.9",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # shared address space (CGNAT)
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "240.0.0.1",
    "2130706433",  # decimal 127.0.0.1
    "0x7f.1",
    "0x7f000001",
    "0177.0.0.1",  # octal
    "017700000001",
    "127.1",
    "[::1]",
    "::",
    "[::ffff:127.0.0.1]",
    "::ffff:a9fe:a9fe",  # IPv4-mapped metadata address
    "::127.0.0.1",  # IPv4-compatible
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::a9fe:a9fe",
    "[fe80::1]",
    "fe80::1%eth0",
    "[fe80::1%25eth0]",  # a URL's percent-encoded zone id
    "fc00::1",
    "fd12:3456::1",
    "fec0::1",
    "ff02::1",
    "localhost",
    "LOCALHOST.",
    "api.localhost",
    "localhost.localdomain",
    "ip6-localhost",
    "127.0.0.1.",
    "metadata.google.internal",  # cloud metadata services by name
    "METADATA.GOOGLE.INTERNAL.",
    "metadata.goog",
    "instance-data.ec2.internal",
]


@pytest.mark.parametrize("host", FORBIDDEN_HOSTS)
def test_literal_private_loopback_and_link_local_hosts_are_refused_by_spelling(host: str) -> None:
    assert egress.host_problem(host) is not None
    with pytest.raises(EgressRefused):
        egress.vet(host, 443, STRICT)  # no resolver involved: a literal never reaches DNS


@pytest.mark.parametrize("host", ["8.8.8.8", "2606:4700:4700::1111", "[2a00:1450:4001::1]", "2002:808:808::1"])
def test_public_literals_pass(host: str) -> None:
    assert egress.host_problem(host) is None
    assert [str(ip) for ip in egress.vet(host, 443, STRICT)] == [egress.normalize_host(host)]


@pytest.mark.parametrize(
    ("host", "address"),
    [("2130706433", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("[::1]", "::1")],
)
def test_encoded_literals_decode_like_inet_aton(host: str, address: str) -> None:
    assert str(egress.parse_ip_literal(host)) == address


def test_names_are_not_judged_by_spelling() -> None:
    assert egress.host_problem("api.acme.example") is None
    assert egress.parse_ip_literal("1.2.3.4.5") is None


def test_the_policies_follow_the_environment() -> None:
    test_env = Settings(
        environment=Environment.TEST, auth=AuthSettings(jwt_secret=SecretStr("t" * 40)), consumption=CONSUMPTION
    )
    prod_insecure = PROD.model_copy(update={"endpoint_tests": EndpointTestSettings(allow_insecure_endpoints=True)})
    assert EgressPolicy.for_endpoints(DEV_INSECURE).allow_private
    assert not EgressPolicy.for_endpoints(Settings()).allow_private
    assert not EgressPolicy.for_endpoints(prod_insecure).allow_private  # the flag never counts in production
    assert EgressPolicy.for_callbacks(Settings()).allow_private  # local receivers in development
    assert not EgressPolicy.for_callbacks(test_env).allow_private
    assert not EgressPolicy.for_callbacks(PROD).allow_private
    assert not EgressPolicy.for_callbacks(prod_insecure).allow_private


# --- resolution -------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["10.1.2.3", "169.254.169.254", "127.0.0.1", "::1", "fd00::5", "::ffff:10.0.0.1"])
def test_a_name_resolving_to_a_private_address_is_refused(network: Network, address: str) -> None:
    network.answer("api.provider.test", [address])
    with pytest.raises(EgressRefused, match=re.escape(f"resolves to {ipaddress.ip_address(address)}")):
        egress.vet("api.provider.test", 443, STRICT)
    assert network.dialled == []


def test_one_private_answer_among_public_ones_refuses_the_name(network: Network) -> None:
    network.answer("api.provider.test", [PUBLIC_V4, "10.0.0.7"])
    with pytest.raises(EgressRefused, match=re.escape("10.0.0.7")):
        egress.vet("api.provider.test", 443, STRICT)


def test_an_unknown_name_is_unreachable_not_refused(network: Network) -> None:
    with pytest.raises(httpcore.ConnectError) as caught:
        egress.vet("nowhere.test", 443, STRICT)
    assert not isinstance(caught.value, EgressRefused)


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda check: check.__name__)
def test_checks_refuse_an_endpoint_resolving_to_the_metadata_address(
    network: Network, check: Callable[..., Any]
) -> None:
    network.answer("api.provider.test", ["169.254.169.254"])
    spec = good_spec("https://api.provider.test")

    outcome = check(spec, PROD)

    assert outcome.outcome is Outcome.FAILED
    [error] = outcome.errors
    assert (error.code, error.pointer, error.severity) == ("local-endpoint-refused", "/endpoint/url", Severity.HIGH)
    assert "resolves to 169.254.169.254, a link-local address" in error.message
    assert network.dialled == []
    assert not transient(outcome)  # refusals are never retried


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda check: check.__name__)
def test_production_refuses_loopback_even_with_the_insecure_flag(check: Callable[..., Any]) -> None:
    prod_insecure = PROD.model_copy(update={"endpoint_tests": EndpointTestSettings(allow_insecure_endpoints=True)})
    with Server() as server:
        outcome = check(good_spec(server.url.replace("http://", "https://")), prod_insecure)
    assert [e.code for e in outcome.errors] == ["local-endpoint-refused"]
    assert server.requests == []


def test_insecure_development_still_reaches_a_loopback_provider() -> None:
    with Server() as server:
        outcome = check_health(good_spec(server.url), DEV_INSECURE)
    assert outcome.outcome is Outcome.PASSED
    assert server.requests == [("GET", "/health", f"127.0.0.1:{server.port}")]


# --- DNS rebinding -----------------------------------------------------------------------------------


def test_dns_rebinding_connects_to_the_vetted_address(network: Network) -> None:
    """First answer public, every later one loopback: the request goes to the address that was checked."""
    with Server() as server:
        name = "rebind.provider.test"
        network.answer(name, [PUBLIC_V4], ["127.0.0.1"])
        with egress.client(STRICT, timeout=3) as client:
            response = client.get(f"http://{name}:{server.port}/health")
            # A client resolving again for the connection would now get 127.0.0.1; this one did not.
            assert network.lookups == [name]
            assert network.dialled == [(PUBLIC_V4, server.port)]
            # Host header: the original name, not the address dialled.
            assert server.requests == [("GET", "/health", f"{name}:{server.port}")]
            assert response.status_code == 200

        # The next connection resolves afresh, gets the private answer, and is refused.
        with egress.client(STRICT, timeout=3) as client, pytest.raises(httpx.ConnectError) as caught:
            client.get(f"http://{name}:{server.port}/health")
    assert egress.refusal(caught.value) is not None
    assert network.dialled == [(PUBLIC_V4, server.port)]
    assert len(server.requests) == 1


def test_tls_verifies_the_original_host_name_on_the_vetted_address(
    network: Network, tmp_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, ca_path = server_tls(tmp_folder, ["api.provider.test"])
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_path))
    network.answer("api.provider.test", [PUBLIC_V4])
    with Server(
        headers={"Strict-Transport-Security": "max-age=63072000", "X-Content-Type-Options": "nosniff"}, tls=context
    ) as server:
        url = f"https://api.provider.test:{server.port}"
        health = check_health(good_spec(url), PROD)
        security = check_security(good_spec(url), PROD)
        # The same server under a name its certificate does not carry: verification fails.
        network.answer("other.provider.test", [PUBLIC_V4])
        mismatch = check_security(good_spec(f"https://other.provider.test:{server.port}"), PROD)

    assert health.outcome is Outcome.PASSED, health
    assert security.outcome is Outcome.PASSED, security
    assert security.evidence["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert [e.code for e in mismatch.errors] == ["tls-certificate-invalid"]
    assert all(address == PUBLIC_V4 for address, _ in network.dialled)


# --- redirects -------------------------------------------------------------------------------------


def test_a_redirect_to_loopback_is_not_followed_in_production(
    network: Network, tmp_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, ca_path = server_tls(tmp_folder, ["api.provider.test"])
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_path))
    network.answer("api.provider.test", [PUBLIC_V4])
    with Server() as internal:
        target = f"http://127.0.0.1:{internal.port}/"
        with Server(status=302, headers={"Location": target}, tls=context) as provider:
            url = f"https://api.provider.test:{provider.port}"
            outcome = check_health(good_spec(url), PROD)

            # Even a client told to follow redirects checks every hop like the first.
            with (
                egress.client(STRICT, timeout=3, follow_redirects=True) as client,
                pytest.raises(httpx.ConnectError) as caught,
            ):
                client.get(f"{url}/health")

            assert len(provider.requests) == 2
        assert internal.requests == []

    assert outcome.outcome is Outcome.FAILED
    [error] = outcome.errors
    assert (error.code, error.pointer) == ("health-status", "/endpoint/healthPath")
    assert f"redirect to {target!r} not followed" in error.message
    assert outcome.evidence["location"] == target
    refused = egress.refusal(caught.value)
    assert refused is not None and "loopback" in refused.reason


# --- consumer webhook callbacks ------------------------------------------------------------------------


def test_subscribing_a_literal_private_callback_is_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhook_routes, "get_settings", lambda: PROD)
    for url in ("http://169.254.169.254/latest", "https://[::1]/hooks", "http://0x7f.1:8080/", "https://localhost./x"):
        with pytest.raises(ValidationError, match="publicly routable"):
            webhook_routes.SubscriptionIn(callback_url=url)
    assert webhook_routes.SubscriptionIn(callback_url="https://hooks.consumer.example/x").callback_url


def test_consumer_deliveries_to_private_addresses_fail_at_once(database_url: str, network: Network) -> None:
    from notifications.webhooks import deliver
    from storage.database import session_scope
    from storage.repositories import services, webhooks
    from storage.repositories.services import Actor
    from tests.support.specs import make_spec

    with session_scope() as session:
        service_id = services.create_submitted(session, make_spec(), Actor("acme", "provider")).id
    network.answer("hooks.consumer.test", ["10.20.30.40"])
    with Server() as receiver:
        urls = [receiver.url + "/hooks", f"http://hooks.consumer.test:{receiver.port}/hooks"]
        event = webhooks.NewEvent("evt-ssrf", "service_deprecated", service_id, "consumers", {"id": "evt-ssrf"})
        with session_scope() as session:
            deliveries = webhooks.create_deliveries(session, event, urls)
        results = [deliver(d, PROD.webhooks, STRICT) for d in deliveries]

    assert receiver.requests == []
    assert network.dialled == []
    assert [(r.status, r.attempt, r.status_code) for r in results] == [("failed", 1, None), ("failed", 1, None)]
    assert "is a loopback address" in str(results[0].error)
    assert "resolves to 10.20.30.40, a private address" in str(results[1].error)
