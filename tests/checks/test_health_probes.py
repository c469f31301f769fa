"""The monitor's probes against a fake provider on loopback: health, the authenticated call, failures."""

from __future__ import annotations

from checks.health_probes import probe
from core.settings import EndpointTestSettings, HealthSettings, Settings
from tests.support.provider import FakeProvider
from tests.support.services import free_port

LOCAL = Settings(
    endpoint_tests=EndpointTestSettings(allow_insecure_endpoints=True), health=HealthSettings(timeout_seconds=2)
)
SECRET_VALUE = "Bearer sk-provider-1234"


def test_a_healthy_provider_accepts_the_credential() -> None:
    with FakeProvider() as provider:
        report = probe({"url": provider.url}, ("Authorization", SECRET_VALUE), ["s" * 43], LOCAL)
    assert (report.health_ok, report.health_status, report.call_ok, report.call_status) == (True, 200, True, 200)
    assert report.health_ms is not None and report.call_ms is not None
    assert provider.requests["GET /health"] == 1 and provider.requests["POST /"] == 1
    assert report.errors == []
    assert SECRET_VALUE not in report.model_dump_json(), "the report never holds the credential"


def test_a_refused_credential_fails_the_call() -> None:
    with FakeProvider() as provider:  # it wants Authorization; the credential goes in another header
        report = probe({"url": provider.url}, ("X-Api-Key", "k"), [], LOCAL)
    assert (report.call_ok, report.call_status) == (False, 401)
    assert report.errors == ["call: answered 401 (the stored credential was refused)"]


def test_without_a_credential_the_call_is_not_made() -> None:
    with FakeProvider() as provider:
        report = probe({"url": provider.url, "healthPath": "/health"}, None, [], LOCAL)
    assert (report.health_ok, report.call_ok) == (True, None)
    assert provider.requests["POST /"] == 0
    assert report.errors == ["call: skipped, no credential stored (PUT /services/{id}/credential)"]


def test_a_failing_health_endpoint_and_an_unreachable_provider() -> None:
    with FakeProvider("health_500") as provider:
        failing = probe({"url": provider.url}, ("Authorization", SECRET_VALUE), [], LOCAL)
    assert (failing.health_ok, failing.health_status, failing.call_ok) == (False, 500, True)
    assert failing.errors == ["health: answered 500"]
    gone = probe({"url": f"http://127.0.0.1:{free_port()}"}, ("Authorization", SECRET_VALUE), [], LOCAL)
    assert (gone.health_ok, gone.call_ok, gone.health_status) == (False, False, None)
    assert gone.errors == ["health: ConnectError", "call: ConnectError"]


def test_private_addresses_are_refused_unless_allowed() -> None:
    with FakeProvider() as provider:
        report = probe({"url": provider.url}, ("Authorization", SECRET_VALUE), [], Settings())
    assert not report.health_ok and not report.call_ok
    assert report.errors[0].startswith("health: refused:")
    assert provider.requests["GET /health"] == 0
