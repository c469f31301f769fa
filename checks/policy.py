"""Policy-compliance phase: evaluate the Rego policies in policies/ against a submitted spec.

Policies run in-process with regopy unless settings.policy.opa_url points at an OPA
server, which then gets the same input over its REST API. Either way each violation
becomes an Issue; critical/high ones block publication, medium/low are warnings.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import regopy

from checks._once import built_once
from core.domain import Issue, Phase, PhaseOutcome, Severity
from core.settings import Settings

ENTRYPOINT = "marketplace/publishing/violations"
_SEVERITY_RANK = {severity: rank for rank, severity in enumerate(Severity)}


class PolicyEvaluationError(RuntimeError):
    """The policy engine failed, or answered something that is not a list of violations."""


def policy_input(spec: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The Rego `input` document: the spec plus the thresholds the policies compare against."""
    policy = settings.policy
    if "openApiSpec" in spec and not _policies_read_openapi(policy.policies_dir):
        # The OpenAPI document can be megabytes, and turning it into Rego terms cost ~2 s per
        # evaluation (measured, 1 MB) for rules that never look at it. A policy that names
        # openApiSpec gets it again.
        spec = {key: value for key, value in spec.items() if key != "openApiSpec"}
    return {
        "spec": spec,
        "settings": {
            # Settings already refuse this flag in production; checking again means a
            # loopback http endpoint can only slip through if both guards are wrong.
            "allow_insecure_endpoints": settings.endpoint_tests.allow_insecure_endpoints and not settings.is_production,
            "min_availability": policy.min_availability,
            "min_enterprise_availability": policy.min_enterprise_availability,
            "max_latency_ms": policy.max_latency_ms,
            "restricted_countries": list(policy.restricted_countries),
        },
    }


@built_once
def _policy_sources(policies_dir: Path) -> tuple[tuple[str, str], ...]:
    """(file name, text) of every policy, read once per process."""
    return tuple((path.name, path.read_text(encoding="utf-8")) for path in sorted(policies_dir.glob("*.rego")))


@built_once
def _policies_read_openapi(policies_dir: Path) -> bool:
    return any("openApiSpec" in text for _, text in _policy_sources(policies_dir))


def policy_version(policies_dir: Path) -> str:
    """Short content digest of the policy files, so a recorded outcome names the rules it used."""
    digest = hashlib.sha256()
    for name, text in _policy_sources(policies_dir):
        digest.update(f"{name}\0{text}\0".encode())
    return digest.hexdigest()[:12]


class _RegoEngine:
    """The policies compiled once into a regopy bundle, then evaluated per spec.

    A plain Interpreter.query() recompiles every module on each call (~10 ms); a
    bundle is compiled once (~17 ms) and each evaluation then takes ~2 ms. The
    runner keeps the input between calls, so set-input-then-query is serialised.
    """

    def __init__(self, sources: tuple[tuple[str, str], ...]) -> None:
        if not sources:
            raise PolicyEvaluationError("no .rego files found in the policies directory")
        builder = regopy.Interpreter()
        for name, text in sources:
            builder.add_module(name, text)
        self._bundle = builder.build(None, [ENTRYPOINT])
        if not self._bundle.ok():
            raise PolicyEvaluationError("the Rego policies failed to compile")
        self._runner = regopy.Interpreter()
        # Without this a failing builtin (e.g. upper() of a number) just drops the
        # violation; failing the evaluation keeps the gate closed instead.
        self._runner.strict_built_in_errors = True
        self._lock = threading.Lock()

    def evaluate(self, input_json: str) -> Any:
        with self._lock:
            self._runner.set_input_term(input_json)
            try:
                output = self._runner.query_bundle_entrypoint(self._bundle, ENTRYPOINT)
            except ValueError as exc:  # regopy can emit invalid JSON when a rule errors
                raise PolicyEvaluationError(f"regopy returned an unreadable result: {exc}") from exc
        if not output.ok() or len(output) != 1 or len(output[0].expressions) != 1:
            raise PolicyEvaluationError(f"regopy evaluation failed: {output}")
        return output[0].expressions[0]


@built_once
def _engine(policies_dir: Path) -> _RegoEngine:
    # Compiled once per process and policies directory, even when the worker's threads ask at once.
    return _RegoEngine(_policy_sources(policies_dir))


def _evaluate_opa(opa_url: str, input_json: str, timeout: float) -> Any:
    """Ask an OPA server through its Data API; an absent `result` means the rule is not loaded."""
    response = httpx.post(
        f"{opa_url.rstrip('/')}/v1/data/{ENTRYPOINT}",
        content=f'{{"input": {input_json}}}',
        headers={"Content-Type": "application/json"},
        timeout=timeout,
    )
    response.raise_for_status()
    body = response.json()
    if not isinstance(body, dict) or "result" not in body:
        raise PolicyEvaluationError(f"OPA at {opa_url} has no {ENTRYPOINT} rule loaded")
    return body["result"]


def _to_issue(violation: Any) -> Issue:
    try:
        return Issue(
            code=violation["policy"],
            message=violation["message"],
            pointer=violation.get("pointer", ""),
            severity=Severity(violation["severity"]),
            remediation=violation.get("remediation"),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise PolicyEvaluationError(f"malformed policy violation: {violation!r}") from exc


def _sort_key(issue: Issue) -> tuple[int, str, str, str]:
    return (_SEVERITY_RANK[issue.severity], issue.code, issue.pointer, issue.message)


def evaluate_policies(spec: dict[str, Any], settings: Settings) -> list[Issue]:
    """Every policy violation of `spec`, most severe first, in a stable order."""
    # allow_nan=False: NaN/Infinity are not JSON and would be misread by either engine.
    input_json = json.dumps(policy_input(spec, settings), allow_nan=False)
    opa_url = settings.policy.opa_url
    if opa_url:
        raw = _evaluate_opa(opa_url, input_json, settings.policy.timeout_seconds)
    else:
        raw = _engine(settings.policy.policies_dir).evaluate(input_json)
    if not isinstance(raw, list):
        raise PolicyEvaluationError(f"expected a list of violations, got {type(raw).__name__}")
    return sorted((_to_issue(v) for v in raw), key=_sort_key)


def check_policies(spec: dict[str, Any], settings: Settings) -> PhaseOutcome:
    """The policy-compliance outcome: blocking errors, warnings, and which engine and rules decided."""
    issues = evaluate_policies(spec, settings)
    return PhaseOutcome.from_issues(
        Phase.POLICY_COMPLIANCE,
        issues,
        engine="opa" if settings.policy.opa_url else "regopy",
        policy_version=policy_version(settings.policy.policies_dir),
    )
