"""The run log's line per phase: readable summaries of what each phase found."""

from __future__ import annotations

from checks.phase_lines import MAX_ISSUES, phase_lines
from core.domain import Issue, Outcome, Phase, PhaseOutcome, Severity


def passed(phase: Phase, check: str | None = None, **evidence: object) -> PhaseOutcome:
    return PhaseOutcome(phase=phase, check=check, outcome=Outcome.PASSED, evidence=evidence)


def issue(code: str, severity: Severity = Severity.HIGH, pointer: str = "/x") -> Issue:
    return Issue(code=code, message=f"{code} broken", pointer=pointer, severity=severity)


def endpoint_checks() -> list[PhaseOutcome]:
    return [
        passed(Phase.ENDPOINT_TESTS, "health", status_code=200, elapsed_ms=12.4, attempts=1),
        passed(Phase.ENDPOINT_TESTS, "auth", status_code=401, attempts=1),
        passed(Phase.ENDPOINT_TESTS, "conformance", operations=[{"path": "/health"}, {"path": "/models"}]),
        passed(Phase.ENDPOINT_TESTS, "security", status_code=200),
        passed(Phase.ENDPOINT_TESTS, "latency", p50_ms=40.0, p95_ms=80.2, sla_ms=500, attempts=2),
    ]


def test_a_passing_run_reads_phase_by_phase() -> None:
    outcomes = [
        passed(Phase.METADATA_VALIDATION),
        PhaseOutcome(phase=Phase.OPENAPI_VALIDATION, outcome=Outcome.SKIPPED),
        PhaseOutcome.from_issues(Phase.POLICY_COMPLIANCE, [issue("sla-latency-ceiling", Severity.LOW)]),
        passed(Phase.REGISTRY_SYNC, registryId="reg-42"),
        passed(Phase.PERSISTENCE),
        *endpoint_checks(),
        passed(Phase.ACTIVATION, version="1.2.0"),
        passed(Phase.ACTIVATION, "search_index", version="1.2.0"),
    ]
    assert phase_lines(outcomes) == [
        "metadata validation: passed",
        "OpenAPI validation: skipped",
        "policy compliance: passed with 1 warning (sla-latency-ceiling)",
        "registry sync: registered as reg-42",
        "persistence: version stored, now testing",
        "endpoint tests: 5 passed (health 12 ms, auth 401, conformance (2 operations), security, "
        "latency p95 80 ms vs SLA 500 ms after 2 attempts)",
        "activation: active, indexed (version 1.2.0)",
    ]


def test_violations_are_counted_and_named() -> None:
    outcome = PhaseOutcome.from_issues(
        Phase.POLICY_COMPLIANCE,
        [issue("https-required"), issue("gdpr-certification-required", Severity.CRITICAL), issue("x", Severity.MEDIUM)],
    )
    assert phase_lines([outcome]) == [
        "policy compliance: 2 violations (https-required, gdpr-certification-required); 1 warning (x)"
    ]


def test_a_failed_check_says_what_failed_and_why() -> None:
    checks = endpoint_checks()
    checks[0] = PhaseOutcome.from_issues(
        Phase.ENDPOINT_TESTS,
        [Issue(code="endpoint-server-error", message="health check answered 500", pointer="/endpoint/url")],
        check="health",
        status_code=500,
        attempts=4,
    )
    (line,) = phase_lines(checks)
    assert line.startswith(
        "endpoint tests: 4 passed, 1 failed (health FAILED after 4 attempts: "
        "/endpoint/url: health check answered 500 [endpoint-server-error], auth 401"
    )


def test_errors_are_quoted_with_their_pointers_up_to_a_few() -> None:
    outcome = PhaseOutcome.from_issues(
        Phase.METADATA_VALIDATION, [issue(f"e{n}", pointer=f"/p{n}") for n in range(MAX_ISSUES + 2)]
    )
    (line,) = phase_lines([outcome])
    assert line.startswith("metadata validation: failed, 5 errors (/p0: e0 broken [e0]; /p1: e1 broken [e1]")
    assert line.endswith("; +2 more)")


def test_approval_waiting_and_decided() -> None:
    waiting = passed(Phase.APPROVAL, "requested", approvalId=1, expiresAt="2026-12-13T10:00:42.123+00:00")
    decided = PhaseOutcome(
        phase=Phase.APPROVAL,
        check="decision",
        outcome=Outcome.FAILED,
        evidence={"decision": "reject", "reviewer": "grace", "comment": "no DPA"},
    )
    assert phase_lines([waiting]) == ["approval: waiting for governance (expires 2026-12-13T10:00Z)"]
    assert phase_lines([decided]) == ["approval: rejected by grace (no DPA)"]
