"""Metadata validation rules (checks/validation.py), as a pure function."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import SecretStr

from checks.validation import compact_size, endpoint_host_issues, validate_metadata
from core.domain import Outcome, Phase, Severity
from core.settings import AuthSettings, DatabaseSettings, EndpointTestSettings, Environment, LimitSettings, Settings
from tests.checks.test_spec_schema import EXAMPLE
from tests.support.openapi_docs import openapi_document
from tests.support.secrets import CONSUMPTION

DEV = Settings(environment=Environment.DEVELOPMENT)
INSECURE = Settings(
    environment=Environment.DEVELOPMENT, endpoint_tests=EndpointTestSettings(allow_insecure_endpoints=True)
)
PROD = Settings(
    environment=Environment.PRODUCTION,
    database=DatabaseSettings(url="postgresql+psycopg://u:p@db.example/marketplace"),
    auth=AuthSettings(jwt_secret=SecretStr("a-real-production-secret-of-32-characters-or-more")),
    consumption=CONSUMPTION,
)


@pytest.fixture
def spec() -> dict[str, Any]:
    return copy.deepcopy(EXAMPLE)


def findings(spec: dict[str, Any], settings: Settings = DEV, code: str | None = None) -> list[tuple[str, str]]:
    outcome = validate_metadata(spec, settings)
    return [(i.code, i.pointer) for i in outcome.errors if code in (None, i.code)]


def test_good_spec_passes(spec: dict[str, Any]) -> None:
    outcome = validate_metadata(spec, PROD)
    assert outcome.phase is Phase.METADATA_VALIDATION
    assert outcome.outcome is Outcome.PASSED
    assert outcome.errors == outcome.warnings == []


# --- semver -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "1", "01.0.0", "1.0.0.0", "latest"])
def test_bad_semver_is_an_error(spec: dict[str, Any], version: str) -> None:
    spec["version"] = version
    (issue,) = validate_metadata(spec, DEV).errors
    assert (issue.code, issue.pointer) == ("semver", "/version")
    assert issue.message == f"{version!r} is not a semantic version (MAJOR.MINOR.PATCH)"


def test_leading_v_gets_a_hint(spec: dict[str, Any]) -> None:
    spec["version"] = "v1.0.0"
    (issue,) = validate_metadata(spec, DEV).errors
    assert issue.remediation == "drop the leading 'v'"


@pytest.mark.parametrize("version", ["1.0.0-beta.1", "2.3.4-rc.1+build.5"])
def test_prerelease_ok_in_development_error_in_production(spec: dict[str, Any], version: str) -> None:
    spec["version"] = version
    assert validate_metadata(spec, DEV).outcome is Outcome.PASSED
    assert findings(spec, PROD) == [("semver", "/version")]


def test_build_metadata_is_fine_in_production(spec: dict[str, Any]) -> None:
    spec["version"] = "1.2.3+build.7"
    assert findings(spec, PROD) == []


# --- endpoint URL -------------------------------------------------------------------------

LOOPBACK_AND_PRIVATE = [
    "https://localhost:8443/v1",
    "https://LOCALHOST./v1",
    "https://api.localhost/v1",
    "https://127.0.0.1/v1",
    "https://127.1/v1",
    "https://2130706433/v1",
    "https://0x7f000001/v1",
    "https://[::1]/v1",
    "https://[::ffff:127.0.0.1]/v1",
    "https://10.1.2.3/v1",
    "https://192.168.0.10/v1",
    "https://172.16.5.4/v1",
    "https://169.254.169.254/latest/meta-data",
    "https://[fe80::1]/v1",
    "https://0.0.0.0/v1",
    "https://100.64.0.1/v1",
    "https://0x7f.1/v1",
    "https://0177.0.0.1/v1",
    "https://127.0.0.1./v1",
    "https://[fe80::1%25eth0]/v1",
    "https://[2002:7f00:1::]/v1",
    "https://[64:ff9b::a00:1]/v1",
    "https://[::ffff:a9fe:a9fe]/v1",
    "https://[fc00::1]/v1",
    "https://224.0.0.1/v1",
]


@pytest.mark.parametrize("url", LOOPBACK_AND_PRIVATE)
def test_internal_hosts_refused_without_allow_insecure(spec: dict[str, Any], url: str) -> None:
    spec["endpoint"]["url"] = url
    assert findings(spec, DEV) == [("endpoint_url", "/endpoint/url")]
    assert findings(spec, PROD) == [("endpoint_url", "/endpoint/url")]
    assert findings(spec, INSECURE) == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000/v1", "http://localhost/v1"])
def test_http_loopback_accepted_only_with_allow_insecure(spec: dict[str, Any], url: str) -> None:
    spec["endpoint"]["url"] = url
    assert findings(spec, INSECURE) == []
    assert len(findings(spec, DEV)) == 2  # http and loopback, both reported


@pytest.mark.parametrize("url", [*LOOPBACK_AND_PRIVATE, "https://metadata.google.internal/computeMetadata/v1/"])
def test_the_submit_time_host_rule_is_phase_twos_own(spec: dict[str, Any], url: str) -> None:
    spec["endpoint"]["url"] = url
    [issue] = endpoint_host_issues(spec, PROD)
    assert (issue.code, issue.pointer) == ("endpoint_url", "/endpoint/url")
    assert issue in validate_metadata(spec, PROD).errors  # the same finding, the same words
    assert endpoint_host_issues(spec, DEV) == [issue]  # insecure endpoints not allowed
    assert endpoint_host_issues(spec, INSECURE) == []


@pytest.mark.parametrize(
    "url", ["https://api.acme.example/v1", "http://api.acme.example/v1", "https://8.8.8.8/v1", "https://[::1/v1", 42]
)
def test_the_submit_time_host_rule_leaves_the_rest_to_phase_two(spec: dict[str, Any], url: object) -> None:
    # Names are not resolved at submit; http, unparsable URLs and odd types are phase 2's to report.
    spec["endpoint"]["url"] = url
    assert endpoint_host_issues(spec, PROD) == []


def test_http_refused_in_production(spec: dict[str, Any]) -> None:
    spec["endpoint"]["url"] = "http://api.acme.example/v1"
    (issue,) = validate_metadata(spec, PROD).errors
    assert (issue.code, issue.message) == ("endpoint_url", "production endpoints must use https")
    assert findings(spec, INSECURE) == []


def test_allow_insecure_is_ignored_in_production(spec: dict[str, Any]) -> None:
    # Settings refuses this combination; the rule must hold even if one is built around it.
    prod_insecure = PROD.model_copy(update={"endpoint_tests": EndpointTestSettings(allow_insecure_endpoints=True)})
    spec["endpoint"]["url"] = "http://127.0.0.1/v1"
    assert len(findings(spec, prod_insecure)) == 2


def test_public_ip_is_fine(spec: dict[str, Any]) -> None:
    spec["endpoint"]["url"] = "https://93.184.216.34/v1"
    assert findings(spec, PROD) == []


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://api.acme.example/v1", "http or https; not 'ftp'"),
        ("api.acme.example/v1", "it has none"),
        ("https:///v1", "no host"),
        ("https://user:secret@api.acme.example/v1", "credentials"),
        ("https://token@api.acme.example/v1", "credentials"),
        ("https://api.acme.example/v1#top", "fragment"),
        ("https://api.acme.example/v1#", "fragment"),
        ("https://api.acme.example:99999/v1", "cannot be parsed"),
        ("https://[::1/v1", "cannot be parsed"),
        ("https://bad host.example/v1", "not a valid host"),
        ("https://a..b/v1", "not a valid host"),
    ],
)
def test_malformed_urls(spec: dict[str, Any], url: str, fragment: str) -> None:
    spec["endpoint"]["url"] = url
    errors = validate_metadata(spec, INSECURE).errors
    assert errors
    assert {(i.code, i.pointer) for i in errors} == {("endpoint_url", "/endpoint/url")}
    assert any(fragment in i.message for i in errors), [i.message for i in errors]


# --- pricing ------------------------------------------------------------------------------


def pricing(model: str, *rates: tuple[str, float], currency: str | None = "USD") -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "rates": [{"unit": u, "price": p} for u, p in rates]}
    if currency:
        body["currency"] = currency
    return body


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (pricing("free", currency=None), []),
        (pricing("free", ("request", 0)), []),
        (pricing("free", ("request", 0.01)), [("pricing", "/pricing/rates/0/price")]),
        (pricing("per-token", ("input_tokens", 1)), []),
        (pricing("per-token", ("request", 1)), [("pricing", "/pricing/rates/0/unit"), ("pricing", "/pricing/rates")]),
        (pricing("per-token"), [("pricing", "/pricing/rates")]),
        (
            pricing("per-token", ("input_tokens", 1), ("month", 10)),
            [("pricing", "/pricing/rates/1/unit")],
        ),
        (pricing("per-request", ("request", 0.1)), []),
        (pricing("per-request", ("month", 10)), [("pricing", "/pricing/rates")]),
        (pricing("subscription", ("month", 10)), []),
        (pricing("subscription", ("request", 1)), [("pricing", "/pricing/rates")]),
        (pricing("subscription", ("month", 10), currency=None), [("pricing", "/pricing/currency")]),
        (
            pricing("per-request", ("request", 0.1), ("request", 0.2)),
            [("pricing", "/pricing/rates/1/unit")],
        ),
    ],
)
def test_pricing_consistency(spec: dict[str, Any], body: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    spec["pricing"] = body
    assert findings(spec) == expected


def plan(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "requestsPerMinute": 60, **fields}


@pytest.mark.parametrize(
    ("plans", "model", "expected"),
    [
        ([plan("free"), plan("pro", pricePerMonth=49, default=True)], "per-token", []),
        ([plan("a"), plan("a")], "per-token", [("pricing", "/pricing/plans/1/name")]),
        ([plan("a", default=True), plan("b", default=True)], "per-token", [("pricing", "/pricing/plans/1/default")]),
        ([plan("paid", pricePerMonth=5)], "free", [("pricing", "/pricing/plans/0/pricePerMonth")]),
        ([plan("gratis", pricePerMonth=0)], "free", []),
    ],
)
def test_plan_consistency(
    spec: dict[str, Any], plans: list[dict[str, Any]], model: str, expected: list[tuple[str, str]]
) -> None:
    spec["pricing"] = {"model": model, "currency": "USD", "plans": plans}
    if model == "per-token":
        spec["pricing"]["rates"] = [{"unit": "input_tokens", "price": 1}]
    assert findings(spec) == expected


def test_a_priced_plan_needs_a_currency(spec: dict[str, Any]) -> None:
    spec["pricing"] = {"model": "free", "plans": [plan("p", pricePerMonth=0)]}
    assert findings(spec) == []
    spec["pricing"] = {
        "model": "subscription",
        "rates": [{"unit": "month", "price": 1}],
        "plans": [plan("p", pricePerMonth=9)],
    }
    assert ("pricing", "/pricing/currency") in findings(spec)


# --- data residency -----------------------------------------------------------------------


@pytest.mark.parametrize("entries", [["US"], ["DE", "FR", "EU"], ["EEA", "APAC"], ["GLOBAL"], ["GB", "CH"]])
def test_known_residency(spec: dict[str, Any], entries: list[str]) -> None:
    spec["compliance"]["dataResidency"] = entries
    outcome = validate_metadata(spec, DEV)
    assert outcome.errors == outcome.warnings == []


@pytest.mark.parametrize("bad", ["XX", "UK", "de", "DEU", "Europe"])
def test_unknown_residency_is_an_error(spec: dict[str, Any], bad: str) -> None:
    spec["compliance"]["dataResidency"] = ["DE", bad]
    (issue,) = validate_metadata(spec, DEV).errors
    assert (issue.code, issue.pointer) == ("data_residency", "/compliance/dataResidency/1")
    assert repr(bad) in issue.message


def test_global_with_others_is_a_medium_warning(spec: dict[str, Any]) -> None:
    spec["compliance"]["dataResidency"] = ["DE", "GLOBAL"]
    outcome = validate_metadata(spec, DEV)
    assert outcome.outcome is Outcome.PASSED
    (warning,) = outcome.warnings
    assert (warning.code, warning.pointer, warning.severity) == (
        "data_residency",
        "/compliance/dataResidency/1",
        Severity.MEDIUM,
    )


# --- size limits --------------------------------------------------------------------------


def test_spec_over_body_limit(spec: dict[str, Any]) -> None:
    small = Settings(limits=LimitSettings(max_body_bytes=1024))
    assert findings(spec, small) == []
    spec["description"] = "x" * 1024
    assert findings(spec, small) == [("size", "")]


def test_size_counts_utf8_bytes(spec: dict[str, Any]) -> None:
    small = Settings(limits=LimitSettings(max_body_bytes=1024))
    spec["description"] = "é" * 400  # 400 characters, 800 bytes
    assert findings(spec, small) == [("size", "")]


def test_too_many_openapi_paths(spec: dict[str, Any]) -> None:
    limited = Settings(limits=LimitSettings(max_openapi_paths=3))
    spec["openApiSpec"] = {"openapi": "3.1.0", "paths": {f"/p{n}": {} for n in range(3)}}
    assert findings(spec, limited) == []
    spec["openApiSpec"]["paths"]["/p3"] = {}
    assert findings(spec, limited) == [("size", "/openApiSpec/paths")]


def test_all_findings_are_collected(spec: dict[str, Any]) -> None:
    spec["version"] = "1.0"
    spec["endpoint"]["url"] = "http://10.0.0.1/v1"
    spec["pricing"] = pricing("per-request", currency=None)
    spec["compliance"]["dataResidency"] = ["XX"]
    codes = [code for code, _ in findings(spec, PROD)]
    assert codes == ["semver", "endpoint_url", "endpoint_url", "pricing", "pricing", "data_residency"]


def test_odd_shapes_do_not_crash() -> None:
    outcome = validate_metadata({"endpoint": "x", "pricing": [], "compliance": None}, DEV)
    assert {(i.code, i.pointer) for i in outcome.errors} == {("semver", "/version"), ("endpoint_url", "/endpoint/url")}


def test_size_is_the_compact_utf8_json_measure(spec: dict[str, Any]) -> None:
    spec["description"] = 'é "quoted" \\ \n tab\t 😀 \x01'
    spec["openApiSpec"] = openapi_document(resources=2)
    expected = len(json.dumps(spec, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    assert compact_size(spec) == expected
    spec["huge"] = 10**30  # past orjson's 64 bits: measured the slow way
    assert compact_size(spec) == expected + len(',"huge":') + 31
