"""Phase 3, OpenAPI validation of the provider's optional openApiSpec (OpenAPI 3.1 only).

The document is untrusted and can be large (a megabyte and more), so the phase is three linear
passes, none of which fetches anything or resolves a reference more than once:

1. references (checks.openapi_refs): only local ones, each resolvable, no cycles, no overlong
   chains, bounded fan-out; the API runs this part synchronously (reference_issues);
2. structure (checks.openapi_structure): the official OpenAPI 3.1 JSON Schema, with every Schema
   Object checked against the OpenAPI dialect's meta-schema, by jsonschema-rs (compiled once);
3. semantics (checks.openapi_semantics): operationIds, path templates and parameters, duplicate
   parameters and tags, schema defaults and patterns.

Each pass runs only on a document the previous one accepted. openapi-spec-validator is no longer
used here: it follows every reference afresh wherever it is used, ~7 ms per path (6-20 s for a
1 MB document); the checks it made are all in the passes above (see tests/checks/test_openapi.py),
and a 1 MiB document now takes tens of milliseconds (bench/validation_latency.py).
"""

from __future__ import annotations

import time
from typing import Any

from checks.openapi_refs import ROOT, RefChecker
from checks.openapi_semantics import HTTP_METHODS, semantic_issues
from checks.openapi_structure import structural_issues
from core.domain import Issue, Outcome, Phase, PhaseOutcome
from core.settings import Settings


def validate_openapi(spec: dict[str, Any], settings: Settings) -> PhaseOutcome:
    """Validate spec['openApiSpec'] as OpenAPI 3.1 without touching the network or filesystem."""
    doc = spec.get("openApiSpec")
    if doc is None:
        return PhaseOutcome(phase=Phase.OPENAPI_VALIDATION, outcome=Outcome.SKIPPED)
    t0 = time.perf_counter()
    issues = _version_issues(doc)
    if not issues:
        issues = _size_issues(doc, settings) or document_issues(doc)
    return PhaseOutcome.from_issues(
        Phase.OPENAPI_VALIDATION,
        issues,
        paths=_count_paths(doc),
        operations=_count_operations(doc),
        validation_ms=round((time.perf_counter() - t0) * 1000, 1),
    )


def document_issues(doc: dict[str, Any]) -> list[Issue]:
    """Findings of the three passes over an OpenAPI 3.1 document, from the first pass that has any."""
    refs = RefChecker(doc)
    return refs.issues() or structural_issues(doc) or semantic_issues(doc, refs)


def reference_issues(spec: dict[str, Any], settings: Settings) -> list[Issue]:
    """The cheap part of validate_openapi, for the API to run synchronously before storing a spec.

    Version, path count, and the reference scan (remote and file: refs, dangling refs, cycles,
    fan-out): milliseconds and no library, nothing fetched. [] when there is no document.
    """
    doc = spec.get("openApiSpec")
    if doc is None:
        return []
    return _version_issues(doc) or _size_issues(doc, settings) or RefChecker(doc).issues()


def _version_issues(doc: object) -> list[Issue]:
    if not isinstance(doc, dict):
        return [Issue(code="openapi_version", message="openApiSpec must be an object", pointer=ROOT)]
    version = doc.get("openapi")
    if isinstance(version, str) and version.startswith("3.1."):
        return []
    declared = f"declares {version!r}" if version is not None else "has no 'openapi' field"
    if "swagger" in doc:
        declared = f"is Swagger {doc['swagger']!r}"
    return [
        Issue(
            code="openapi_version",
            message=f"openApiSpec {declared}; only OpenAPI 3.1.x is accepted",
            pointer=f"{ROOT}/openapi",
            remediation="convert the document to OpenAPI 3.1 and set openapi: '3.1.0'",
        )
    ]


def _size_issues(doc: dict[str, Any], settings: Settings) -> list[Issue]:
    # Phase 2 reports this too; repeated here so the passes never see an oversized document.
    count, limit = _count_paths(doc), settings.limits.max_openapi_paths
    if count <= limit:
        return []
    return [Issue(code="size", message=f"openApiSpec has {count} paths, limit {limit}", pointer=f"{ROOT}/paths")]


def _count_paths(doc: object) -> int:
    paths = doc.get("paths") if isinstance(doc, dict) else None
    return len(paths) if isinstance(paths, dict) else 0


def _count_operations(doc: object) -> int:
    # Literal path items only; a path item that is a $ref counts as zero operations.
    paths = doc.get("paths") if isinstance(doc, dict) else None
    items = paths.values() if isinstance(paths, dict) else []
    return sum(1 for item in items if isinstance(item, dict) for key in item if key in HTTP_METHODS)
