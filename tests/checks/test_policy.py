"""Unit tests of the policy-compliance logic (the Prefect task itself writes to the database)."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import regopy
from pydantic import SecretStr

from checks.policy import ENTRYPOINT, PolicyEvaluationError, _engine, check_policies, evaluate_policies, policy_input
from core.domain import Outcome, Phase, Severity
from core.settings import PROJECT_ROOT, AuthSettings, EndpointTestSettings, Environment, PolicySettings, Settings
from tests.support.loopback_http import LoopbackHTTPServer, Reply, Request, json_reply
from tests.support.openapi_docs import openapi_document
from tests.support.secrets import CONSUMPTION

CLEAN_SPEC: dict[str, Any] = {
    "name": "acme-chat",
    "version": "1.0.0",
    "description": "Acme's general purpose chat model",
    "provider": {"id": "acme", "name": "Acme AI"},
    "category": "chat",
    "endpoint": {"url": "https://api.acme.example/v1", "healthPath": "/health", "authentication": {"type": "bearer"}},
    "pricing": {
        "model": "per-token",
        "currency": "USD",
        "rates": [{"unit": "input_tokens", "price": 0.5, "per": 1000}],
    },
    "sla": {"availability": 99.9, "maxLatencyMs": 2000, "supportLevel": "standard"},
    "compliance": {"level": "public", "dataResidency": ["US"], "certifications": ["SOC2"]},
}


def make_settings(*, insecure: bool = False, **policy: Any) -> Settings:
    return Settings(
        environment=Environment.TEST,
        auth=AuthSettings(jwt_secret=SecretStr("test-secret")),
        consumption=CONSUMPTION,
        policy=PolicySettings(**policy),
        endpoint_tests=EndpointTestSettings(allow_insecure_endpoints=insecure),
    )


def spec_with(**changes: Any) -> dict[str, Any]:
    """CLEAN_SPEC with `section={key: value}` merged in; a value of None deletes the key."""
    spec = copy.deepcopy(CLEAN_SPEC)
    for section, values in changes.items():
        for key, value in values.items():
            if value is None:
                spec[section].pop(key, None)
            else:
                spec[section][key] = value
    return spec


def found(spec: dict[str, Any], settings: Settings | None = None) -> set[tuple[str, Severity, str]]:
    return {(i.code, i.severity, i.pointer) for i in evaluate_policies(spec, settings or make_settings())}


def test_clean_spec_passes() -> None:
    outcome = check_policies(CLEAN_SPEC, make_settings())
    assert outcome.phase is Phase.POLICY_COMPLIANCE
    assert outcome.outcome is Outcome.PASSED
    assert outcome.errors == []
    assert outcome.warnings == []
    assert outcome.evidence["engine"] == "regopy"
    assert len(outcome.evidence["policy_version"]) == 12


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"compliance": {"dataResidency": None}},
            ("data-residency-required", Severity.HIGH, "/compliance/dataResidency"),
        ),
        (
            {"compliance": {"dataResidency": []}},
            ("data-residency-required", Severity.HIGH, "/compliance/dataResidency"),
        ),
        ({"endpoint": {"url": "http://provider.example.com"}}, ("https-required", Severity.CRITICAL, "/endpoint/url")),
        (
            {"compliance": {"dataResidency": ["DE"]}},
            ("gdpr-certification-required", Severity.HIGH, "/compliance/certifications"),
        ),
        (
            {"compliance": {"handlesPHI": True}},
            ("hipaa-certification-required", Severity.CRITICAL, "/compliance/certifications"),
        ),
        (
            {"compliance": {"dataResidency": ["US", "KP"]}},
            ("restricted-countries", Severity.CRITICAL, "/compliance/dataResidency/1"),
        ),
        ({"sla": {"availability": 98.5}}, ("sla-minimum-availability", Severity.HIGH, "/sla/availability")),
        ({"sla": {"maxLatencyMs": 45000}}, ("sla-latency-ceiling", Severity.MEDIUM, "/sla/maxLatencyMs")),
        (
            {"compliance": {"level": "confidential", "certifications": []}},
            ("confidential-requires-certification", Severity.MEDIUM, "/compliance/certifications"),
        ),
    ],
)
def test_each_policy_triggers(changes: dict[str, Any], expected: tuple[str, Severity, str]) -> None:
    assert found(spec_with(**changes)) == {expected}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000",
        "http://127.255.3.4/v1",
        "http://localhost:8080",
        "HTTP://LocalHost./",
        "http://[::1]:9000",
    ],
)
def test_loopback_http_passes_only_when_insecure_allowed(url: str) -> None:
    spec = spec_with(endpoint={"url": url})
    assert found(spec, make_settings(insecure=True)) == set()
    assert found(spec, make_settings(insecure=False)) == {("https-required", Severity.CRITICAL, "/endpoint/url")}


@pytest.mark.parametrize(
    "url",
    [
        "http://provider.example.com",
        "http://127.0.0.1.evil.example",
        "http://127.0.0.1@evil.example",
        "http://evil.example\\@127.0.0.1",
        "http://128.0.0.1",
        "http://127.0.0.256",
        "ftp://127.0.0.1",
        "127.0.0.1:9000",
        "",
    ],
)
def test_non_loopback_or_non_http_is_always_critical(url: str) -> None:
    spec = spec_with(endpoint={"url": url})
    assert found(spec, make_settings(insecure=True)) == {("https-required", Severity.CRITICAL, "/endpoint/url")}


def test_production_never_passes_insecure_flag_to_policies() -> None:
    settings = make_settings(insecure=True)
    assert policy_input(CLEAN_SPEC, settings)["settings"]["allow_insecure_endpoints"] is True
    prod = settings.model_copy(update={"environment": Environment.PRODUCTION})  # bypasses the validator on purpose
    assert policy_input(CLEAN_SPEC, prod)["settings"]["allow_insecure_endpoints"] is False


def test_restricted_countries_one_violation_per_entry() -> None:
    spec = spec_with(compliance={"dataResidency": ["kp", "US", "CU"]})
    issues = [i for i in evaluate_policies(spec, make_settings()) if i.code == "restricted-countries"]
    assert [i.pointer for i in issues] == ["/compliance/dataResidency/0", "/compliance/dataResidency/2"]
    assert [i.message for i in issues] == [
        "data may not be kept in KP (restricted country)",
        "data may not be kept in CU (restricted country)",
    ]
    assert found(spec_with(compliance={"dataResidency": ["FR"]}), make_settings(restricted_countries=["FR"])) >= {
        ("restricted-countries", Severity.CRITICAL, "/compliance/dataResidency/0")
    }


@pytest.mark.parametrize("location", ["EU", "eea", "FR", "GR", "NO"])
def test_gdpr_needs_gdpr_or_iso27001_for_eu_locations(location: str) -> None:
    spec = spec_with(compliance={"dataResidency": ["US", location], "handlesPersonalData": True})
    assert found(spec) == {("gdpr-certification-required", Severity.HIGH, "/compliance/certifications")}
    for cert in ("GDPR", "ISO27001"):
        assert found(spec_with(compliance={"dataResidency": [location], "certifications": [cert]})) == set()


def test_gdpr_ignores_non_eu_locations() -> None:
    assert (
        found(spec_with(compliance={"dataResidency": ["US", "GB", "CH", "APAC"], "handlesPersonalData": True})) == set()
    )


def test_hipaa_satisfied_by_hipaa_certification() -> None:
    assert found(spec_with(compliance={"handlesPHI": True, "certifications": ["SOC2", "HIPAA"]})) == set()


@pytest.mark.parametrize(
    ("availability", "support", "violates"),
    [
        (99.0, "standard", False),
        (98.99, "basic", True),
        (99.5, "premium", False),
        (99.5, "enterprise", True),
        (99.9, "enterprise", False),
    ],
)
def test_sla_availability_thresholds(availability: float, support: str, violates: bool) -> None:
    codes = {code for code, _, _ in found(spec_with(sla={"availability": availability, "supportLevel": support}))}
    assert ("sla-minimum-availability" in codes) is violates


def test_sla_thresholds_come_from_settings_and_messages_read_well() -> None:
    settings = make_settings(min_availability=99.95, max_latency_ms=1000)
    issues = evaluate_policies(CLEAN_SPEC, settings)
    assert [(i.code, i.message) for i in issues] == [
        ("sla-minimum-availability", "SLA availability 99.9% is below the 99.95% required for standard support"),
        ("sla-latency-ceiling", "SLA p95 latency of 2000 ms exceeds the 1000 ms ceiling"),
    ]
    assert all(i.remediation for i in issues)


def test_warnings_do_not_block() -> None:
    spec = spec_with(sla={"maxLatencyMs": 60000}, compliance={"level": "restricted", "certifications": []})
    outcome = check_policies(spec, make_settings())
    assert outcome.outcome is Outcome.PASSED
    assert outcome.errors == []
    assert {w.code for w in outcome.warnings} == {"sla-latency-ceiling", "confidential-requires-certification"}


def test_blocking_violations_fail_and_sort_most_severe_first() -> None:
    spec = spec_with(
        endpoint={"url": "http://provider.example.com"},
        sla={"availability": 90, "maxLatencyMs": 60000},
        compliance={"dataResidency": ["SY", "DE"], "handlesPHI": True, "certifications": []},
    )
    outcome = check_policies(spec, make_settings())
    assert outcome.outcome is Outcome.FAILED
    assert [(i.severity, i.code) for i in outcome.errors] == [
        (Severity.CRITICAL, "hipaa-certification-required"),
        (Severity.CRITICAL, "https-required"),
        (Severity.CRITICAL, "restricted-countries"),
        (Severity.HIGH, "gdpr-certification-required"),
        (Severity.HIGH, "sla-minimum-availability"),
    ]
    assert [w.code for w in outcome.warnings] == ["sla-latency-ceiling"]


def test_messages_keep_submitted_text_intact() -> None:
    url = 'http://exämple.com/"quoted"\\path😀'
    (issue,) = evaluate_policies(spec_with(endpoint={"url": url}), make_settings())
    assert issue.message == f"endpoint.url must use https, got {url}"


def test_cached_engine_is_safe_to_reuse_across_threads() -> None:
    bad = spec_with(compliance={"dataResidency": ["KP"]})
    settings = make_settings()
    failures: list[str] = []

    def worker(spec: dict[str, Any], expected: int) -> None:
        for _ in range(20):
            if len(evaluate_policies(spec, settings)) != expected:
                failures.append(spec["compliance"]["dataResidency"][0])

    threads = [threading.Thread(target=worker, args=(s, n)) for s, n in [(CLEAN_SPEC, 0), (bad, 1)] * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_malformed_input_value_is_rejected() -> None:
    with pytest.raises(ValueError, match="JSON"):
        evaluate_policies(spec_with(sla={"availability": float("nan")}), make_settings())


# --- OPA REST mode -----------------------------------------------------------------------------


def regopy_violations(policy_in: dict[str, Any]) -> list[Any]:
    """What a real OPA would answer: the repository's policies evaluated on the posted input."""
    rego = regopy.Interpreter()
    for path in sorted((PROJECT_ROOT / "policies").glob("*.rego")):
        rego.add_module(path.name, path.read_text(encoding="utf-8"))
    rego.set_input_term(json.dumps(policy_in))
    result: list[Any] = rego.query("data.marketplace.publishing.violations")[0].expressions[0]
    return result


OpaFixture = tuple[str, list[dict[str, Any]], list[Any]]


@pytest.fixture
def fake_opa(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpaFixture]:
    """A loopback HTTP server answering like OPA; yields (url, received requests, scripted replies)."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    received: list[dict[str, Any]] = []
    replies: list[Any] = []

    def answer(request: Request) -> Reply:
        body = request.json()
        received.append({"path": request.path, "content_type": request.headers["Content-Type"], "body": body})
        reply = replies.pop(0) if replies else {"result": regopy_violations(body["input"])}
        status, payload = reply if isinstance(reply, tuple) else (200, reply)
        return json_reply(status, payload)

    with LoopbackHTTPServer(answer, methods=("POST",)) as server:
        yield f"{server.url}/", received, replies


def opa_settings(url: str, **kwargs: Any) -> Settings:
    return make_settings(opa_url=url, timeout_seconds=5, **kwargs)


def test_opa_mode_posts_input_and_parses_result(fake_opa: OpaFixture) -> None:
    url, received, _ = fake_opa
    spec = spec_with(endpoint={"url": "http://127.0.0.1:9000"}, compliance={"dataResidency": ["IR"]})
    settings = opa_settings(url, insecure=True)
    outcome = check_policies(spec, settings)
    (request,) = received
    assert request["path"] == f"/v1/data/{ENTRYPOINT}"
    assert request["content_type"] == "application/json"
    assert request["body"] == {"input": policy_input(spec, settings)}
    assert outcome.evidence["engine"] == "opa"
    assert [(i.code, i.pointer) for i in outcome.errors] == [("restricted-countries", "/compliance/dataResidency/0")]
    assert evaluate_policies(spec, settings) == evaluate_policies(spec, make_settings(insecure=True))


def test_opa_mode_sorts_scripted_violations(fake_opa: OpaFixture) -> None:
    url, _, replies = fake_opa
    low = {"policy": "z-note", "severity": "low", "message": "fyi", "pointer": "/name"}
    crit = {"policy": "a-rule", "severity": "critical", "message": "no", "remediation": "fix", "pointer": "/x"}
    replies.append({"result": [low, crit]})
    outcome = check_policies(CLEAN_SPEC, opa_settings(url))
    assert [i.code for i in outcome.errors] == ["a-rule"]
    assert [(i.code, i.severity, i.remediation) for i in outcome.warnings] == [("z-note", Severity.LOW, None)]


@pytest.mark.parametrize(
    "reply",
    [{}, {"result": {"not": "a list"}}, {"result": [{"policy": "x", "severity": "bogus", "message": "m"}]}],
)
def test_opa_mode_rejects_unusable_answers(fake_opa: OpaFixture, reply: Any) -> None:
    url, _, replies = fake_opa
    replies.append(reply)
    with pytest.raises(PolicyEvaluationError):
        evaluate_policies(CLEAN_SPEC, opa_settings(url))


def test_opa_mode_http_errors_propagate_for_retries(fake_opa: OpaFixture) -> None:
    url, _, replies = fake_opa
    replies.append((500, {"code": "internal_error"}))
    with pytest.raises(httpx.HTTPStatusError):
        evaluate_policies(CLEAN_SPEC, opa_settings(url))


# --- compiled once; the OpenAPI document stays out of the input unless a policy reads it ----------


def test_the_bundle_is_compiled_once_for_all_threads() -> None:
    # Not _engine's first call in this process; what matters is that every thread gets the same one.
    policies_dir = make_settings().policy.policies_dir
    engines: set[int] = set()

    def worker() -> None:
        for _ in range(10):
            engines.add(id(_engine(policies_dir)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert engines == {id(_engine(policies_dir))}


def test_openapi_document_is_left_out_of_the_input_when_no_policy_reads_it() -> None:
    settings = make_settings()
    assert not any("openApiSpec" in p.read_text() for p in settings.policy.policies_dir.glob("*.rego"))
    spec = spec_with() | {"openApiSpec": openapi_document(resources=3)}
    assert "openApiSpec" not in policy_input(spec, settings)["spec"]
    assert "openApiSpec" in spec  # the caller's spec is not changed
    for changes in ({}, {"endpoint": {"url": "http://api.acme.example"}}, {"compliance": {"dataResidency": ["KP"]}}):
        with_doc = spec_with(**changes) | {"openApiSpec": openapi_document(resources=3)}
        assert evaluate_policies(with_doc, settings) == evaluate_policies(spec_with(**changes), settings)


def test_a_policy_that_names_openapi_spec_gets_the_document(tmp_path: Path) -> None:
    for rego in (PROJECT_ROOT / "policies").glob("*.rego"):
        (tmp_path / rego.name).write_text(rego.read_text())
    (tmp_path / "openapi_title.rego").write_text(
        """package marketplace.publishing

import data.marketplace.publishing.lib
import rego.v1

violations contains lib.violation(
	"openapi-title", "low", "the OpenAPI document has no title", null, "/openApiSpec/info",
) if {
	doc := object.get(lib.spec, "openApiSpec", {})
	doc != {}
	not doc.info.title
}
"""
    )
    settings = make_settings(policies_dir=tmp_path)
    untitled = spec_with() | {"openApiSpec": {"openapi": "3.1.0", "info": {"version": "1"}}}
    assert policy_input(untitled, settings)["spec"]["openApiSpec"] == untitled["openApiSpec"]
    assert [i.code for i in evaluate_policies(untitled, settings)] == ["openapi-title"]
