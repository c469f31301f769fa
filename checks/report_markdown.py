"""The publish report a run leaves in the Prefect UI (a markdown artifact), rendered from its phase results.

Pure: `render_report` takes what the marketplace database recorded (the same phase results the
status report shows) and returns markdown. Its first line says how the run ended, and for a
failed run why, so the UI's artifact list and a glance at the run tell the story.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from checks.phase_lines import expiry_text, phase_label
from core.domain import Outcome, Phase, PhaseOutcome, ServiceStatus

MAX_ROWS = 50  # rows of one findings table; the rest are counted
MAX_CELL = 300  # characters of one table cell
KEY_PREFIX = "publish-report-"


@dataclass(frozen=True)
class PublishReport:
    """What the report says: the version, how its run ended, and each phase's outcome."""

    service_id: str
    subject: str  # "acme/chat-pro 1.2.0"
    status: str  # the version's status when the report is written
    outcomes: Sequence[PhaseOutcome] = ()
    failure_phase: str | None = None
    failure_reason: str | None = None
    compensation: Sequence[str] = field(default_factory=tuple)  # undo steps that ran
    compensation_problems: Sequence[str] = field(default_factory=tuple)


def report_key(service_id: str) -> str:
    """The artifact key of a service's publish reports (lowercase letters, digits and dashes only)."""
    return KEY_PREFIX + re.sub(r"[^a-z0-9-]+", "-", service_id.lower()).strip("-")


def headline(report: PublishReport) -> str:
    """The first line: how the run ended (and why, when it failed)."""
    if report.status == ServiceStatus.FAILED.value:
        where = f" in {phase_label(report.failure_phase)}" if report.failure_phase else ""
        return f"Failed{where}: {_flat(report.failure_reason or 'no reason recorded')}"
    if report.status == ServiceStatus.PENDING_APPROVAL.value:
        requested = [o for o in report.outcomes if o.phase is Phase.APPROVAL and o.check == "requested"]
        expires = f" (expires {expiry_text(requested[-1].evidence.get('expiresAt'))})" if requested else ""
        return f"Waiting for approval: {report.subject}{expires}"
    if report.status == ServiceStatus.ACTIVE.value:
        return f"Published: {report.subject} is active"
    return f"{report.status.replace('_', ' ').capitalize()}: {report.subject}"


def render_report(report: PublishReport) -> str:
    """The whole report as markdown."""
    sections = [
        f"## {_escape_line(headline(report))}",
        _summary(report),
        _phases(report.outcomes),
        _errors(report.outcomes),
        _violations(report.outcomes),
        _warnings(report.outcomes),
        _endpoint_evidence(report.outcomes),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def _summary(report: PublishReport) -> str:
    """One line under the headline: which service, its status, what compensation did."""
    parts = [f"**service** {_cell(report.subject)} (`{report.service_id}`)", f"**status** {report.status}"]
    if report.compensation:
        problems = "; ".join(report.compensation_problems)
        done = f"incomplete ({problems})" if problems else "done"
        parts.append(f"**compensation** {_cell(steps_text(report.compensation))}: {_cell(done)}")
    return " · ".join(parts)


def steps_text(steps: Sequence[str]) -> str:
    """Undo steps as a person reads them: `_undo_registry` → `undo registry`."""
    return ", ".join(step.lstrip("_").replace("_", " ") for step in steps)


def _phases(outcomes: Sequence[PhaseOutcome]) -> str:
    if not outcomes:
        return "No phase ran."
    rows = [
        (
            phase_label(o.phase),
            o.check or "",
            f"**{o.outcome.value}**" if o.outcome is Outcome.FAILED else o.outcome.value,
            f"{o.duration_ms:.1f} ms",
            _findings_count(o),
        )
        for o in outcomes
    ]
    return "### Phases\n\n" + _table(("phase", "check", "outcome", "duration", "findings"), rows)


def _errors(outcomes: Sequence[PhaseOutcome]) -> str:
    found = [(o, i) for o in outcomes if o.phase is not Phase.POLICY_COMPLIANCE for i in o.errors]
    rows = [(_where(o), f"`{i.pointer or '/'}`", i.message, i.code) for o, i in found]
    return _section("Errors", ("phase", "pointer", "message", "code"), rows)


def _violations(outcomes: Sequence[PhaseOutcome]) -> str:
    found = [i for o in outcomes if o.phase is Phase.POLICY_COMPLIANCE for i in o.errors]
    rows = [(i.code, i.severity.value, i.message, i.remediation or "", f"`{i.pointer or '/'}`") for i in found]
    return _section("Policy violations", ("policy", "severity", "message", "remediation", "pointer"), rows)


def _warnings(outcomes: Sequence[PhaseOutcome]) -> str:
    found = [(o, i) for o in outcomes for i in o.warnings]
    rows = [
        (_where(o), i.code, i.severity.value, i.message, i.remediation or "", f"`{i.pointer or '/'}`") for o, i in found
    ]
    return _section("Warnings", ("phase", "code", "severity", "message", "remediation", "pointer"), rows)


def _endpoint_evidence(outcomes: Sequence[PhaseOutcome]) -> str:
    checks = [o for o in outcomes if o.phase is Phase.ENDPOINT_TESTS]
    rows = [(o.check or "", o.outcome.value, *_evidence_cells(o)) for o in checks]
    return _section("Endpoint tests", ("check", "outcome", "status codes", "latency", "attempts", "notes"), rows)


def _evidence_cells(outcome: PhaseOutcome) -> tuple[str, str, str, str]:
    e = outcome.evidence
    codes = e.get("status_codes") or ([e["status_code"]] if e.get("status_code") is not None else [])
    if isinstance(e.get("operations"), list):
        codes = [f"{op.get('path')} {op.get('status_code', op.get('error', '?'))}" for op in e["operations"]]
    latency = ""
    if isinstance(e.get("p95_ms"), int | float):
        sla = f"{e['sla_ms']} ms" if e.get("sla_ms") is not None else "none"
        latency = f"p50 {e.get('p50_ms')} ms, p95 {e['p95_ms']} ms vs SLA {sla}"
    elif isinstance(e.get("elapsed_ms"), int | float):
        latency = f"{e['elapsed_ms']} ms"
    notes = [str(e[k]) for k in ("note", "error", "tls_version") if e.get(k)]
    if e.get("headers_missing"):
        notes.append("missing headers: " + ", ".join(map(str, e["headers_missing"])))
    return ", ".join(map(str, codes)), latency, str(e.get("attempts", "")), "; ".join(notes)


def _section(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return ""
    shown = _table(header, rows[:MAX_ROWS])
    more = f"\n\n… and {len(rows) - MAX_ROWS} more" if len(rows) > MAX_ROWS else ""
    return f"### {title} ({len(rows)})\n\n{shown}{more}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(text: str) -> str:
    flat = _flat(text)
    flat = flat if len(flat) <= MAX_CELL else flat[: MAX_CELL - 1] + "…"
    return _escape_line(flat).replace("|", "\\|")


def _flat(text: str) -> str:
    return " ".join(str(text).split())


def _escape_line(text: str) -> str:
    """Text from a provider's spec or endpoint is shown as text: no HTML tags reach the renderer."""
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _where(outcome: PhaseOutcome) -> str:
    return phase_label(outcome.phase) + (f" · {outcome.check}" if outcome.check else "")


def _findings_count(outcome: PhaseOutcome) -> str:
    parts = [f"{len(outcome.errors)} error(s)"] if outcome.errors else []
    parts += [f"{len(outcome.warnings)} warning(s)"] if outcome.warnings else []
    return ", ".join(parts)
