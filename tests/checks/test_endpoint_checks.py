"""Endpoint checks (phase 7) against a real local provider; no database, no Prefect."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import jsonschema
import pytest
from openapi_spec_validator import validate as validate_openapi

import checks.endpoint_suite as endpoint_suite
from checks.endpoint_checks import (
    check_auth,
    check_health,
    check_latency,
    check_security,
)
from checks.endpoint_conformance import check_conformance
from core.domain import Issue, Outcome, Phase, PhaseOutcome, Severity
from core.settings import PROJECT_ROOT, EndpointTestSettings, Settings
from tests.support.provider import FakeProvider, good_spec, provider_openapi

ALL_CHECKS = (check_health, check_auth, check_conformance, check_security, check_latency)


@pytest.fixture
def settings() -> Settings:
    return Settings(
        endpoint_tests=EndpointTestSettings(allow_insecure_endpoints=True, latency_samples=3, timeout_seconds=2)
    )


@pytest.fixture
def strict_settings() -> Settings:
    return Settings(endpoint_tests=EndpointTestSettings(allow_insecure_endpoints=False, timeout_seconds=2))


@pytest.fixture
def healthy() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


def codes(outcome: PhaseOutcome) -> list[str]:
    return [issue.code for issue in outcome.errors + outcome.warnings]


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the support module itself ------------------------------------------------------------------


def test_good_spec_is_a_valid_service_spec_with_a_valid_openapi_document(healthy):
    schema = json.loads((PROJECT_ROOT / "core" / "schemas" / "service-spec.schema.json").read_text())
    spec = good_spec(healthy.url, name="other", version="2.0.0")

    jsonschema.Draft202012Validator(schema).validate(spec)
    validate_openapi(provider_openapi(healthy.url))
    assert (spec["name"], spec["version"], spec["endpoint"]["url"]) == ("other", "2.0.0", healthy.url)


# --- each check against the provider in each mode --------------------------------------------------


def test_healthy_provider_passes_all_five_checks(healthy, settings):
    outcomes = {check.__name__: check(good_spec(healthy.url), settings) for check in ALL_CHECKS}

    for outcome in outcomes.values():
        assert outcome.outcome is Outcome.PASSED, outcome
        assert outcome.phase is Phase.ENDPOINT_TESTS
        assert outcome.errors == []
    assert [op["path"] for op in outcomes["check_conformance"].evidence["operations"]] == ["/health", "/v1/models"]
    assert codes(outcomes["check_security"]) == ["endpoint-not-tls"]
    assert outcomes["check_auth"].evidence["status_code"] == 401
    assert healthy.requests["GET /health"] == 1 + 1 + 1 + 3  # health, conformance, security, 3 latency samples


def test_health_500_fails_health_with_the_status_in_evidence(settings):
    with FakeProvider("health_500") as provider:
        outcome = check_health(good_spec(provider.url), settings)

    assert outcome.outcome is Outcome.FAILED
    assert outcome.check == "health"
    assert outcome.evidence["status_code"] == 500
    assert outcome.errors[0].severity is Severity.HIGH
    assert "500" in outcome.errors[0].message


def test_open_auth_fails_auth(settings):
    with FakeProvider("open_auth") as provider:
        outcome = check_auth(good_spec(provider.url), settings)
        assert provider.requests["POST /"] == 1

    assert outcome.outcome is Outcome.FAILED
    assert outcome.errors[0].code == "auth-not-enforced"
    assert "accepts unauthenticated calls" in outcome.errors[0].message
    assert outcome.evidence["status_code"] == 200


def test_slow_provider_fails_latency_against_a_tiny_sla(settings):
    with FakeProvider("slow", delay_ms=30) as provider:
        spec = good_spec(provider.url)
        spec["sla"]["maxLatencyMs"] = 5
        outcome = check_latency(spec, settings)
        assert provider.requests["GET /health"] == 3

    assert outcome.outcome is Outcome.FAILED
    assert outcome.evidence["p95_ms"] >= 30
    assert outcome.evidence["p50_ms"] <= outcome.evidence["p95_ms"]
    assert len(outcome.evidence["samples_ms"]) == 3
    assert outcome.errors[0].message == f"p95 {outcome.evidence['p95_ms']:.0f} ms exceeds SLA 5 ms"
    assert outcome.errors[0].pointer == "/sla/maxLatencyMs"


def test_bad_schema_fails_conformance_naming_the_path(settings):
    with FakeProvider("bad_schema") as provider:
        outcome = check_conformance(good_spec(provider.url), settings)

    assert outcome.outcome is Outcome.FAILED
    [error] = outcome.errors
    assert error.code == "schema-mismatch"
    assert error.pointer == "/openApiSpec/paths/~1v1~1models/get/responses/200"
    assert "GET /v1/models" in error.message
    assert "'data' is a required property" in error.message


def test_plain_http_is_a_warning_not_a_failure(healthy, settings):
    outcome = check_security(good_spec(healthy.url), settings)

    assert outcome.outcome is Outcome.PASSED
    [warning] = outcome.warnings
    assert (warning.code, warning.severity, warning.message) == (
        "endpoint-not-tls",
        Severity.LOW,
        "endpoint is not TLS",
    )
    assert outcome.evidence["scheme"] == "http"


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda check: check.__name__)
def test_connection_refused_fails_cleanly(check, settings):
    url = f"http://127.0.0.1:{unused_port()}"

    outcome = check(good_spec(url), settings)

    assert outcome.outcome is Outcome.FAILED
    assert outcome.errors[0].code == "endpoint-unreachable"
    assert outcome.errors[0].pointer.startswith(("/endpoint/url", "/openApiSpec/paths"))


def test_timeout_fails_health(settings):
    quick = settings.model_copy(
        update={"endpoint_tests": EndpointTestSettings(allow_insecure_endpoints=True, timeout_seconds=0.1)}
    )
    with FakeProvider("slow", delay_ms=400) as provider:
        outcome = check_health(good_spec(provider.url), quick)

    assert outcome.errors[0].code == "endpoint-timeout"
    assert "error" in outcome.evidence


def test_redirects_are_not_followed(settings):
    with FakeProvider("redirect") as provider:
        outcome = check_health(good_spec(provider.url), settings)
        assert provider.requests["GET /v1/models"] == 0

    assert outcome.outcome is Outcome.FAILED
    assert outcome.evidence["status_code"] == 302
    assert outcome.errors[0].code == "health-status"


# --- TLS -------------------------------------------------------------------------------------------


def test_untrusted_certificate_is_a_critical_failure(settings):
    with FakeProvider(tls=True) as provider:
        outcome = check_security(good_spec(provider.url), settings)

    assert outcome.outcome is Outcome.FAILED
    [error] = outcome.errors
    assert (error.code, error.severity) == ("tls-certificate-invalid", Severity.CRITICAL)
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.evidence["error"]


def test_trusted_tls_records_the_version_and_checks_headers(settings, monkeypatch):
    with FakeProvider(tls=True) as good, FakeProvider(tls=True, security_headers=False) as bare:
        monkeypatch.setenv("SSL_CERT_FILE", str(good.ca_path))
        good_outcome = check_security(good_spec(good.url), settings)
        monkeypatch.setenv("SSL_CERT_FILE", str(bare.ca_path))
        bare_outcome = check_security(good_spec(bare.url), settings)

    assert good_outcome.outcome is Outcome.PASSED
    assert good_outcome.evidence["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert codes(good_outcome) == []
    assert bare_outcome.outcome is Outcome.PASSED
    assert sorted(codes(bare_outcome)) == ["missing-strict-transport-security", "missing-x-content-type-options"]
    assert {w.severity for w in bare_outcome.warnings} == {Severity.MEDIUM}


# --- conformance details ---------------------------------------------------------------------------


def test_no_openapi_document_skips_conformance(healthy, settings):
    spec = good_spec(healthy.url)
    del spec["openApiSpec"]

    outcome = check_conformance(spec, settings)

    assert outcome.outcome is Outcome.SKIPPED
    assert outcome.passed
    assert "openApiSpec" in outcome.evidence["note"]
    assert sum(healthy.requests.values()) == 0


def test_conformance_skips_operations_needing_parameters_and_accepts_ranges(healthy, settings):
    doc = provider_openapi(healthy.url)
    doc["paths"]["/v1/models/{id}"] = {"get": {"responses": {"200": {"description": "One"}}}}
    doc["paths"]["/search"] = {
        "parameters": [{"$ref": "#/components/parameters/Query"}],
        "get": {"responses": {"200": {"description": "Hits"}}},
    }
    doc["components"]["parameters"] = {"Query": {"name": "q", "in": "query", "required": True}}
    doc["paths"]["/health"]["get"]["responses"] = {"2XX": {"$ref": "#/components/responses/Health"}}
    doc["components"]["responses"] = {
        "Health": {
            "description": "Up",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}},
        }
    }
    spec = good_spec(healthy.url) | {"openApiSpec": doc}

    outcome = check_conformance(spec, settings)

    assert outcome.outcome is Outcome.PASSED, outcome
    assert {s["path"] for s in outcome.evidence["skipped_operations"]} == {"/v1/models/{id}", "/search"}
    health = outcome.evidence["operations"][0]
    assert (health["declared_as"], health["body_checked"]) == ("2XX", True)
    assert healthy.requests["GET /search"] == 0


def test_undeclared_status_fails_conformance(healthy, settings):
    doc = provider_openapi(healthy.url)
    doc["paths"]["/health"]["get"]["responses"] = {"204": {"description": "Up"}}

    outcome = check_conformance(good_spec(healthy.url) | {"openApiSpec": doc}, settings)

    [error] = outcome.errors
    assert error.code == "undeclared-status"
    assert error.pointer == "/openApiSpec/paths/~1health/get/responses"
    assert "GET /health answered 200" in error.message


def test_remote_refs_are_never_fetched(healthy, settings):
    doc = provider_openapi(healthy.url)
    doc["components"]["schemas"]["Model"] = {"$ref": f"{healthy.url}/schema.json"}

    outcome = check_conformance(good_spec(healthy.url) | {"openApiSpec": doc}, settings)

    assert outcome.outcome is Outcome.FAILED
    assert outcome.errors[0].code == "schema-unusable"
    assert healthy.requests["GET /schema.json"] == 0


def test_conformance_calls_at_most_twenty_operations(healthy, settings):
    doc = provider_openapi(healthy.url)
    doc["paths"] = {f"/p{i}": {"get": {"responses": {"default": {"description": "Any"}}}} for i in range(25)}

    outcome = check_conformance(good_spec(healthy.url) | {"openApiSpec": doc}, settings)

    assert outcome.outcome is Outcome.PASSED
    assert len(outcome.evidence["operations"]) == 20
    assert outcome.evidence["untested"] == [f"/p{i}" for i in range(20, 25)]
    assert sum(healthy.requests.values()) == 20


@pytest.mark.parametrize("schema", ["abc", {"type": 7}, {"properties": {"data": "x"}}])
def test_malformed_schema_fails_conformance_without_raising(schema, healthy, settings):
    doc = provider_openapi(healthy.url)
    doc["components"]["schemas"]["ModelList"] = schema

    outcome = check_conformance(good_spec(healthy.url) | {"openApiSpec": doc}, settings)

    assert [e.code for e in outcome.errors] == ["schema-unusable"]


# --- refusing targets before any call -------------------------------------------------------------


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda check: check.__name__)
def test_without_insecure_mode_http_and_loopback_are_never_called(check, healthy, strict_settings):
    https_loopback = healthy.url.replace("http://", "https://")

    for url, code in ((healthy.url, "insecure-endpoint-refused"), (https_loopback, "local-endpoint-refused")):
        outcome = check(good_spec(url), strict_settings)
        assert outcome.outcome is Outcome.FAILED
        assert codes(outcome) == [code]
        assert outcome.errors[0].severity is Severity.HIGH
    assert sum(healthy.requests.values()) == 0


def test_credentials_in_the_url_are_refused(healthy, settings):
    url = healthy.url.replace("http://", "http://user:secret@")

    outcome = check_auth(good_spec(url), settings)

    assert codes(outcome) == ["endpoint-url-invalid"]
    assert sum(healthy.requests.values()) == 0


# --- the suite: each check retried while its failure is transient ----------------------------------------------------


def failed(check: str, code: str) -> PhaseOutcome:
    issue = Issue(code=code, message="x", pointer="/endpoint/url")
    return PhaseOutcome.from_issues(Phase.ENDPOINT_TESTS, [issue], check=check)


@pytest.mark.parametrize(
    ("code", "retried"),
    [("endpoint-unreachable", True), ("endpoint-server-error", True), ("auth-not-enforced", False)],
)
def test_only_transient_failures_are_retried(code, retried, settings, monkeypatch):
    monkeypatch.setattr(endpoint_suite.time, "sleep", lambda _seconds: None)
    calls = []

    def check(_spec, _settings):
        calls.append(1)
        return failed("auth", code)

    outcome, _ = endpoint_suite.run_check(check, {}, settings)

    assert endpoint_suite.transient(outcome) is retried
    assert len(calls) == outcome.evidence["attempts"] == (1 + endpoint_suite.CHECK_RETRIES if retried else 1)


def test_a_check_that_recovers_passes_with_its_attempts_counted(settings, monkeypatch):
    delays = []
    monkeypatch.setattr(endpoint_suite.time, "sleep", delays.append)
    answers = iter([failed("health", "endpoint-timeout"), failed("health", "endpoint-server-error")])

    def check(_spec, _settings):
        return next(answers, PhaseOutcome(phase=Phase.ENDPOINT_TESTS, check="health", outcome=Outcome.PASSED))

    outcome, _ = endpoint_suite.run_check(check, {}, settings)

    assert outcome.passed
    assert outcome.evidence["attempts"] == 3
    assert len(delays) == 2
    assert delays[1] > delays[0], "exponential backoff between attempts"
