"""The conformance check: the provider's answers must match the OpenAPI document it submitted.

Split from checks/endpoint_checks.py, whose HTTP plumbing (capped, credential-free, no-redirect
probes whose connections core.egress vets against SSRF) and outcome helpers it shares. Every
operation URL is the endpoint URL with another path, so it cannot point at another host; a
refused host stops the check at the first operation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import islice
from typing import Any
from urllib.parse import quote

import httpx
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from checks.endpoint_checks import (
    MAX_BODY_BYTES,
    MAX_CONFORMANCE_OPERATIONS,
    REFUSED_CODE,
    _as_list,
    _endpoint,
    _join,
    _outcome,
    _Probe,
    _refused,
    _Reply,
    _skipped,
    _transport_issue,
)
from core.domain import Issue, PhaseOutcome
from core.settings import Settings

_DOC_URI = "urn:marketplace:submitted-openapi"
_MAX_REF_HOPS = 16


@dataclass(frozen=True)
class _Operation:
    path: str
    url: str
    pointer: str  # JSON pointer of the GET operation inside the OpenAPI document
    operation: dict[str, Any]


def check_conformance(spec: dict[str, Any], settings: Settings) -> PhaseOutcome:
    """Call each parameterless GET of openApiSpec; status and JSON body must match the document."""
    doc = spec.get("openApiSpec")
    if not isinstance(doc, dict):
        return _skipped("conformance", "spec has no openApiSpec")
    if refused := _refused("conformance", spec, settings):
        return refused
    operations, skipped = _testable_operations(doc, str(_endpoint(spec).get("url")))
    if not operations:
        return _skipped("conformance", "no GET operation without required parameters", skipped_operations=skipped)
    registry: Registry[Any] = Registry().with_resource(_DOC_URI, DRAFT202012.create_resource(doc))
    issues: list[Issue] = []
    results: list[dict[str, Any]] = []
    with _Probe(settings) as probe:
        for op in operations[:MAX_CONFORMANCE_OPERATIONS]:
            found, result = _conform(probe, doc, registry, op)
            issues += found
            results.append(result)
            if any(issue.code == REFUSED_CODE for issue in found):
                break  # the same host for every operation: the others would be refused alike
    untested = [op.path for op in operations[len(results) :]]
    return _outcome("conformance", issues, operations=results, skipped_operations=skipped, untested=untested)


def _testable_operations(doc: dict[str, Any], base: str) -> tuple[list[_Operation], list[dict[str, str]]]:
    paths = doc.get("paths")
    operations: list[_Operation] = []
    skipped: list[dict[str, str]] = []
    for key, raw_item in (paths if isinstance(paths, dict) else {}).items():
        path = str(key)
        item, item_pointer = _deref(doc, raw_item, f"/paths/{_escape(path)}")
        operation = item.get("get") if isinstance(item, dict) else None
        if not isinstance(operation, dict):
            continue
        url = _join(base, path) if path.startswith("/") else None
        reason = _untestable_reason(doc, path, item, operation) if url else "not a valid URL path"
        if url and not reason:
            operations.append(_Operation(path, url, f"{item_pointer}/get", operation))
        else:
            skipped.append({"path": path, "reason": str(reason)})
    return operations, skipped


def _untestable_reason(doc: dict[str, Any], path: str, item: dict[str, Any], operation: dict[str, Any]) -> str | None:
    if "{" in path:
        return "templated path"
    declared = [*_as_list(item.get("parameters")), *_as_list(operation.get("parameters"))]
    for raw in declared:
        parameter, _ = _deref(doc, raw, "")
        if not isinstance(parameter, dict):
            return "parameter cannot be resolved"
        if parameter.get("in") == "path" or parameter.get("required") is True:
            return f"required {parameter.get('in')} parameter {parameter.get('name')!r}"
    return None


def _conform(
    probe: _Probe, doc: dict[str, Any], registry: Registry[Any], op: _Operation
) -> tuple[list[Issue], dict[str, Any]]:
    try:
        reply = probe.fetch("GET", op.url)
    except httpx.HTTPError as exc:
        return [_transport_issue(exc, op.url, f"/openApiSpec{op.pointer}")], {"path": op.path, "error": str(exc)}
    result: dict[str, Any] = {"method": "GET", "path": op.path, "status_code": reply.status_code}
    raw_responses = op.operation.get("responses")
    responses: dict[str, Any] = raw_responses if isinstance(raw_responses, dict) else {}
    key = _response_key(responses, reply.status_code)
    result["declared_as"] = key
    if key is None:
        message = f"GET {op.path} answered {reply.status_code}, which the OpenAPI document does not declare"
        return [Issue(code="undeclared-status", message=message, pointer=f"/openApiSpec{op.pointer}/responses")], result
    response_pointer = f"{op.pointer}/responses/{_escape(key)}"
    response, resolved_pointer = _deref(doc, responses[key], response_pointer)
    schema_pointer = _json_schema_pointer(response, resolved_pointer)
    result["body_checked"] = schema_pointer is not None
    if schema_pointer is None:
        return [], result
    # Point at the operation's response even when it is a $ref: that is where the provider looks.
    issue = _body_issue(reply, registry, schema_pointer, op.path, f"/openApiSpec{response_pointer}")
    return ([issue] if issue else []), result


def _response_key(responses: dict[str, Any], status: int) -> str | None:
    # Exact code first, then the range ("2XX"), then "default" (OpenAPI 3.1, Responses Object).
    by_upper = {str(key).upper(): str(key) for key in responses}
    for candidate in (str(status), f"{status // 100}XX", "DEFAULT"):
        if candidate in by_upper:
            return by_upper[candidate]
    return None


def _json_schema_pointer(response: Any, pointer: str) -> str | None:
    content = response.get("content") if isinstance(response, dict) else None
    for media_type, media in (content if isinstance(content, dict) else {}).items():
        base = str(media_type).split(";", 1)[0].strip().lower()
        if (base == "application/json" or base.endswith("+json")) and isinstance(media, dict) and "schema" in media:
            return f"{pointer}/content/{_escape(str(media_type))}/schema"
    return None


def _body_issue(reply: _Reply, registry: Registry[Any], schema_pointer: str, path: str, pointer: str) -> Issue | None:
    if reply.truncated:
        message = f"GET {path}: body exceeds {MAX_BODY_BYTES} bytes"
        return Issue(code="response-too-large", message=message, pointer=pointer)
    try:
        body = json.loads(reply.body)
    except ValueError:
        return Issue(code="response-not-json", message=f"GET {path}: body is not JSON", pointer=pointer)
    # Referencing the schema by its place in the registered document lets its "#/components/..."
    # refs resolve against the whole document. The registry has no retriever: remote refs fail.
    validator = Draft202012Validator({"$ref": f"{_DOC_URI}#{quote(schema_pointer, safe='/~')}"}, registry=registry)
    try:
        error = best_match(islice(validator.iter_errors(body), 50))
    except Exception as exc:
        # Unresolvable refs, but also malformed schemas ({"type": 7}, a string where a schema
        # belongs) that make jsonschema raise TypeError/AttributeError: fail the check, never crash.
        message = f"GET {path}: the declared schema cannot be used: {type(exc).__name__}: {exc}"
        return Issue(code="schema-unusable", message=message, pointer=pointer)
    if error is None:
        return None
    message = f"GET {path} answered {reply.status_code} with a body that does not match the declared schema: "
    return Issue(code="schema-mismatch", message=f"{message}{error.message} (at {error.json_path})", pointer=pointer)


def _deref(doc: dict[str, Any], node: Any, pointer: str) -> tuple[Any, str]:
    """Follow local $refs; a remote or dangling ref yields None (it is never fetched)."""
    for _ in range(_MAX_REF_HOPS):
        ref = node.get("$ref") if isinstance(node, dict) else None
        if not isinstance(ref, str):
            return node, pointer
        if not ref.startswith("#/"):
            return None, pointer
        pointer = ref[1:]
        node = _lookup(doc, pointer)
    return None, pointer


def _lookup(doc: Any, pointer: str) -> Any:
    node = doc
    for raw in pointer.split("/")[1:]:
        segment = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            node = node.get(segment)
        elif isinstance(node, list) and segment.isdigit() and int(segment) < len(node):
            node = node[int(segment)]
        else:
            return None
    return node


def _escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")
