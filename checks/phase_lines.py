"""One line per phase for the run's log in the Prefect UI, written as a person would say it:
"policy compliance: 2 violations (https-required, gdpr-certification-required)".

Pure: outcomes in, text out. `tasks/run_log.py` writes the lines to the run's logger, which ships
them to the Prefect server in the batches it sends anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from core.domain import Issue, Outcome, Phase, PhaseOutcome

MAX_ISSUES = 3  # issues quoted in a line; the count says how many there were
MAX_TEXT = 200  # characters of one quoted message

_LABELS = {Phase.OPENAPI_VALIDATION: "OpenAPI validation"}


def phase_label(phase: Phase | str) -> str:
    """`metadata_validation` → `metadata validation`."""
    try:
        return _LABELS.get(Phase(phase), str(Phase(phase).value).replace("_", " "))
    except ValueError:
        return str(phase).replace("_", " ")


def phase_lines(outcomes: Sequence[PhaseOutcome]) -> list[str]:
    """A line for each phase among `outcomes` (checks of one phase share a line), in order."""
    groups: dict[Phase, list[PhaseOutcome]] = {}
    for outcome in outcomes:
        groups.setdefault(outcome.phase, []).append(outcome)
    return [f"{phase_label(phase)}: {_SUMMARIES.get(phase, _generic)(group)}" for phase, group in groups.items()]


def failed_groups(outcomes: Sequence[PhaseOutcome]) -> list[bool]:
    """For each line of `phase_lines`, whether any check of that phase failed (logged as a warning)."""
    failed: dict[Phase, bool] = {}
    for outcome in outcomes:
        failed[outcome.phase] = failed.get(outcome.phase, False) or not outcome.passed
    return list(failed.values())


def issues_text(issues: Sequence[Issue]) -> str:
    """`/version: not a semantic version [semver]; ...` for the first few issues."""
    quoted = "; ".join(f"{i.pointer or '/'}: {_cut(i.message)} [{i.code}]" for i in issues[:MAX_ISSUES])
    more = f"; +{len(issues) - MAX_ISSUES} more" if len(issues) > MAX_ISSUES else ""
    return quoted + more


def expiry_text(value: Any) -> str:
    """`2026-12-13T10:00Z` from an ISO timestamp (UTC, to the minute); anything else as given."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _generic(group: list[PhaseOutcome]) -> str:
    errors = [i for o in group for i in o.errors]
    warnings = [i for o in group for i in o.warnings]
    if errors:
        return f"failed, {_count(len(errors), 'error')} ({issues_text(errors)})"
    state = "skipped" if all(o.outcome is Outcome.SKIPPED for o in group) else "passed"
    return state + (f" with {_count(len(warnings), 'warning')} ({_codes(warnings)})" if warnings else "")


def _policy(group: list[PhaseOutcome]) -> str:
    errors = [i for o in group for i in o.errors]
    warnings = [i for o in group for i in o.warnings]
    warned = f"{_count(len(warnings), 'warning')} ({_codes(warnings)})" if warnings else ""
    if errors:
        return f"{_count(len(errors), 'violation')} ({_codes(errors)})" + (f"; {warned}" if warned else "")
    return "passed" + (f" with {warned}" if warned else "")


def _registry(group: list[PhaseOutcome]) -> str:
    registered = [o.evidence["registryId"] for o in group if o.passed and o.evidence.get("registryId")]
    return f"registered as {registered[-1]}" if registered else _generic(group)


def _persistence(group: list[PhaseOutcome]) -> str:
    if all(o.passed for o in group):
        repeated = any(o.evidence.get("repeated") for o in group)
        return "already stored (a retried task)" if repeated else "version stored, now testing"
    return _generic(group)


def _endpoint_tests(group: list[PhaseOutcome]) -> str:
    counts = {kind: sum(o.outcome is kind for o in group) for kind in Outcome}
    summary = ", ".join(f"{n} {kind.value}" for kind, n in counts.items() if n)
    return f"{summary} ({', '.join(_check_text(o) for o in group)})"


def _check_text(outcome: PhaseOutcome) -> str:
    name, evidence = outcome.check or "check", outcome.evidence
    attempts = evidence.get("attempts")
    retried = f" after {attempts} attempts" if isinstance(attempts, int) and attempts > 1 else ""
    if outcome.outcome is Outcome.FAILED:
        return f"{name} FAILED{retried}: {issues_text(outcome.errors)}"
    if outcome.outcome is Outcome.SKIPPED:
        return f"{name} skipped ({_cut(str(evidence.get('note', 'not applicable')))})"
    return f"{name}{_check_detail(name, evidence)}{retried}"


def _check_detail(name: str, evidence: dict[str, Any]) -> str:
    if name == "health" and isinstance(evidence.get("elapsed_ms"), int | float):
        return f" {evidence['elapsed_ms']:.0f} ms"
    if name == "auth" and evidence.get("status_code"):
        return f" {evidence['status_code']}"
    if name == "latency" and isinstance(evidence.get("p95_ms"), int | float):
        sla = evidence.get("sla_ms")
        return f" p95 {evidence['p95_ms']:.0f} ms vs SLA " + (f"{sla} ms" if sla is not None else "none")
    if name == "conformance" and isinstance(evidence.get("operations"), list):
        return f" ({_count(len(evidence['operations']), 'operation')})"
    if name == "security" and evidence.get("tls_version"):
        return f" {evidence['tls_version']}"
    return ""


def _approval(group: list[PhaseOutcome]) -> str:
    latest = group[-1]
    if latest.check == "requested":
        return f"waiting for governance (expires {expiry_text(latest.evidence.get('expiresAt'))})"
    if latest.check == "decision":
        verdict = "approved" if latest.evidence.get("decision") == "approve" else "rejected"
        comment = latest.evidence.get("comment")
        return f"{verdict} by {latest.evidence.get('reviewer')}" + (f" ({_cut(str(comment))})" if comment else "")
    return _generic(group)


def _activation(group: list[PhaseOutcome]) -> str:
    if not all(o.passed for o in group):
        return _generic(group)
    checks = {o.check for o in group}
    done = (["active"] if None in checks else []) + (["indexed"] if "search_index" in checks else [])
    version = next((o.evidence["version"] for o in group if o.evidence.get("version")), None)
    return ", ".join(done) + (f" (version {version})" if version else "")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _codes(issues: Sequence[Issue]) -> str:
    return ", ".join(dict.fromkeys(i.code for i in issues))


def _cut(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_TEXT else flat[: MAX_TEXT - 1] + "…"


_SUMMARIES: dict[Phase, Callable[[list[PhaseOutcome]], str]] = {
    Phase.POLICY_COMPLIANCE: _policy,
    Phase.REGISTRY_SYNC: _registry,
    Phase.PERSISTENCE: _persistence,
    Phase.ENDPOINT_TESTS: _endpoint_tests,
    Phase.APPROVAL: _approval,
    Phase.ACTIVATION: _activation,
}
