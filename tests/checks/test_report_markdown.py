"""The publish report artifact's markdown: how the run ended first, then each phase and its findings."""

from __future__ import annotations

from checks.report_markdown import MAX_ROWS, PublishReport, render_report, report_key
from core.domain import Issue, Outcome, Phase, PhaseOutcome, Severity

SERVICE_ID = "5B0C6A47-2f0e-4a43-9c1b-0f3f5d1f2e11"


def passed(phase: Phase, check: str | None = None, duration_ms: float = 1.5, **evidence: object) -> PhaseOutcome:
    return PhaseOutcome(phase=phase, check=check, outcome=Outcome.PASSED, evidence=evidence, duration_ms=duration_ms)


def report(status: str, outcomes: list[PhaseOutcome], **kwargs: object) -> PublishReport:
    return PublishReport(
        service_id=SERVICE_ID, subject="acme/chat-pro 1.2.0", status=status, outcomes=outcomes, **kwargs
    )


def test_key_is_lowercase_letters_digits_and_dashes() -> None:
    assert report_key(SERVICE_ID) == "publish-report-5b0c6a47-2f0e-4a43-9c1b-0f3f5d1f2e11"
    assert report_key("Odd_id/..x") == "publish-report-odd-id-x"


def test_an_active_run_reports_every_phase_with_duration_and_endpoint_evidence() -> None:
    outcomes = [
        passed(Phase.METADATA_VALIDATION, duration_ms=0.42),
        passed(Phase.REGISTRY_SYNC, registryId="reg-1"),
        passed(Phase.ENDPOINT_TESTS, "health", status_code=200, elapsed_ms=12.3, attempts=1),
        passed(Phase.ENDPOINT_TESTS, "latency", p50_ms=9.0, p95_ms=80.0, sla_ms=500, status_codes=[200, 200]),
        passed(Phase.ACTIVATION),
    ]
    markdown = render_report(report("active", outcomes))
    lines = markdown.splitlines()
    assert lines[0] == "## Published: acme/chat-pro 1.2.0 is active"
    assert "| metadata validation |  | passed | 0.4 ms |  |" in lines
    assert "| health | passed | 200 | 12.3 ms | 1 |  |" in lines
    assert "| latency | passed | 200, 200 | p50 9.0 ms, p95 80.0 ms vs SLA 500 ms |  |  |" in lines
    assert "### Errors" not in markdown
    assert "### Policy violations" not in markdown


def test_a_failed_run_says_why_in_its_first_line_and_lists_findings() -> None:
    violation = Issue(
        code="https-required",
        message="endpoint must use https",
        pointer="/endpoint/url",
        severity=Severity.CRITICAL,
        remediation="serve the API over TLS",
    )
    warning = Issue(code="sla-latency-ceiling", message="slow | very", pointer="/sla", severity=Severity.LOW)
    outcomes = [
        passed(Phase.METADATA_VALIDATION),
        PhaseOutcome.from_issues(Phase.POLICY_COMPLIANCE, [violation, warning]),
    ]
    reason = "policy_compliance failed: /endpoint/url: endpoint must use https [https-required]"
    markdown = render_report(
        report(
            "failed",
            outcomes,
            failure_phase="policy_compliance",
            failure_reason=reason,
            compensation=["_undo_registry"],
        )
    )
    lines = markdown.splitlines()
    assert lines[0] == f"## Failed in policy compliance: {reason}"
    assert "| policy compliance |  | **failed** | 0.0 ms | 1 error(s), 1 warning(s) |" in lines
    assert "| https-required | critical | endpoint must use https | serve the API over TLS | `/endpoint/url` |" in lines
    assert "| policy compliance | sla-latency-ceiling | low | slow \\| very |  | `/sla` |" in lines
    assert (
        lines[2]
        == "**service** acme/chat-pro 1.2.0 (`"
        + SERVICE_ID
        + "`) · **status** failed · **compensation** undo registry: done"
    )


def test_errors_carry_their_json_pointers_and_long_lists_are_counted() -> None:
    errors = [Issue(code="semver", message=f"bad {n}", pointer=f"/version/{n}") for n in range(MAX_ROWS + 5)]
    outcome = PhaseOutcome(phase=Phase.METADATA_VALIDATION, outcome=Outcome.FAILED, errors=errors)
    markdown = render_report(report("failed", [outcome], failure_phase="metadata_validation", failure_reason="x"))
    assert f"### Errors ({MAX_ROWS + 5})" in markdown
    assert "| metadata validation | `/version/0` | bad 0 | semver |" in markdown
    assert f"`/version/{MAX_ROWS}`" not in markdown
    assert "… and 5 more" in markdown


def test_waiting_for_approval_says_until_when() -> None:
    waiting = passed(Phase.APPROVAL, "requested", expiresAt="2026-12-13T10:00:00+00:00")
    first = render_report(report("pending_approval", [waiting])).splitlines()[0]
    assert first == "## Waiting for approval: acme/chat-pro 1.2.0 (expires 2026-12-13T10:00Z)"


def test_text_from_the_provider_never_becomes_markup() -> None:
    reason = "endpoint_tests.health failed: /: <img src=x onerror=alert(1)>\n## injected"
    markdown = render_report(report("failed", [], failure_reason=reason))
    first = markdown.splitlines()[0]
    assert first == "## Failed: endpoint_tests.health failed: /: &lt;img src=x onerror=alert(1)&gt; ## injected"
    assert "<img" not in markdown
    assert "\n## injected" not in markdown
    assert "No phase ran." in markdown
