"""Defaults of an OpenAPI document's Schema Objects, each validated against the schema it sits in.

A schema that refers to nothing (most schemas holding a default: a limit, a status enum) is
compiled on its own, once per distinct schema in the document. The others are checked in one
jsonschema-rs pass: they and whatever they refer to, transitively, are placed at their own
locations in a sparse copy of the document (sharing the nodes, not copying them), so local
references resolve as in the document without converting all of it. Nothing is retrieved: the
scan before this refused every non-local reference, and the retriever refuses anything else.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import Any, NoReturn
from urllib.parse import quote

import jsonschema_rs

from checks._once import built_once
from checks.openapi_refs import ROOT, Path, RefChecker, compact_json, has_ref, pointer_of, ref_tokens, serialized_refs
from checks.openapi_structure import dialect_resources
from checks.spec_schema import json_pointer
from core.domain import Issue

_DOC_URI = "urn:x-marketplace:openapi-document"
_MAX_ERRORS = 100
_MAX_MESSAGE = 300
# Formats openapi-spec-validator's checker did not assert (it had no URI checker): a default
# that passed before still passes. The other formats jsonschema-rs knows are asserted.
_UNCHECKED_FORMATS = ("uri", "uri-reference", "iri", "iri-reference", "uri-template")
_COMPILE_ERRORS = (ValueError, jsonschema_rs.ReferencingError)


def default_issues(defaults: list[tuple[dict[str, Any], Path]], refs: RefChecker) -> list[Issue]:
    """A finding for every default (schema node, its location) that its schema does not accept."""
    alone: dict[bytes, list[tuple[dict[str, Any], Path]]] = {}
    linked = []
    for node, path in defaults:
        data = compact_json(node)
        if data is None or has_ref(data):
            linked.append((node, pointer_of(path)))
        else:
            alone.setdefault(data, []).append((node, path))
    issues = [issue for group in alone.values() for issue in _alone_issues(group)]
    return issues + _linked_issues(linked, refs) if linked else issues


def _alone_issues(group: list[tuple[dict[str, Any], Path]]) -> list[Issue]:
    node = group[0][0]
    try:
        errors = list(islice(_compile(node, _dialect_registry()).iter_errors(node["default"]), 10))
    except _COMPILE_ERRORS as exc:
        return [_uncheckable(pointer_of(path), exc) for _, path in group]
    return [_finding(pointer_of(path), error) for _, path in group for error in errors]


def _linked_issues(linked: list[tuple[dict[str, Any], str]], refs: RefChecker) -> list[Issue]:
    try:
        registry = jsonschema_rs.Registry(
            [(_DOC_URI, _sparse_document(linked, refs)), *_dialects()],
            draft=jsonschema_rs.Draft202012,
            retriever=_refuse,
        )
    except _COMPILE_ERRORS as exc:
        return [_uncheckable(pointer, exc) for _, pointer in linked]
    targets = [{"$ref": _DOC_URI + "#" + quote(pointer[len(ROOT) :], safe="/~")} for _, pointer in linked]
    values = [node["default"] for node, _ in linked]
    try:
        batch = _compile({"prefixItems": targets}, registry)
    except _COMPILE_ERRORS:
        # One schema the batch could not compile (an unknown $anchor, say): find it, check the rest.
        issues = []
        for (_, pointer), target, value in zip(linked, targets, values, strict=True):
            try:
                issues += [_finding(pointer, e) for e in islice(_compile(target, registry).iter_errors(value), 10)]
            except _COMPILE_ERRORS as exc:
                issues.append(_uncheckable(pointer, exc))
        return issues
    found = []
    for error in islice(batch.iter_errors(values), _MAX_ERRORS):
        where = list(error.instance_path)
        found.append(_finding(linked[int(where.pop(0))][1], error, where))
    return list({(i.pointer, i.message): i for i in found}.values())


def _sparse_document(linked: list[tuple[dict[str, Any], str]], refs: RefChecker) -> dict[str, Any]:
    """The schemas holding defaults, and what they refer to, at their places in an otherwise empty document."""
    entries: list[tuple[list[str], object]] = [(_tokens(pointer), node) for node, pointer in linked]
    pending: list[object] = [node for node, _ in linked]
    walked: set[int] = set()
    placed: set[str] = set()
    while pending:
        node = pending.pop()
        if id(node) in walked:
            continue
        walked.add(id(node))
        data = compact_json(node)
        for ref in serialized_refs(data) if data is not None else ():
            target = refs.resolve(ref) if ref.startswith("#/") else None
            if target is not None and ref not in placed:
                placed.add(ref)
                entries.append((ref_tokens(ref), target))
                pending.append(target)
    return _sparse(entries)


def _sparse(entries: list[tuple[list[str], object]]) -> dict[str, Any]:
    # Array indexes become object keys: a JSON pointer's "0" names either, so references resolve alike.
    root: dict[str, Any] = {}
    placed: set[tuple[str, ...]] = set()
    for tokens, node in sorted(entries, key=lambda entry: len(entry[0])):
        if not tokens or any(tuple(tokens[:end]) in placed for end in range(1, len(tokens) + 1)):
            continue  # inside a node already placed whole
        here = root
        for token in tokens[:-1]:
            here = here.setdefault(token, {})
        here[tokens[-1]] = node
        placed.add(tuple(tokens))
    return root


def _tokens(pointer: str) -> list[str]:
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[len(ROOT) :].split("/")[1:]]


def _accept(_value: str) -> bool:
    return True


def _refuse(uri: str) -> NoReturn:
    raise ValueError(f"refusing to load {uri!r}: OpenAPI validation never fetches anything")


@built_once
def _dialects() -> list[tuple[str, Any]]:
    return dialect_resources()


@built_once
def _dialect_registry() -> Any:
    return jsonschema_rs.Registry(_dialects(), draft=jsonschema_rs.Draft202012, retriever=_refuse)


def _compile(schema: dict[str, Any], registry: Any) -> Any:
    return jsonschema_rs.Draft202012Validator(
        schema,
        registry=registry,
        retriever=_refuse,
        validate_formats=True,
        formats=dict.fromkeys(_UNCHECKED_FORMATS, _accept),
    )


def _finding(pointer: str, error: Any, where: Iterable[str | int] | None = None) -> Issue:
    inside = json_pointer(error.instance_path if where is None else where)
    message = f"default value does not match its schema: {str(error.message)[:_MAX_MESSAGE]}"
    return Issue(code="invalid_default", message=message, pointer=f"{pointer}/default{inside}")


def _uncheckable(pointer: str, exc: Exception) -> Issue:
    reason = str(exc).split("\n", 1)[0][:_MAX_MESSAGE]  # jsonschema-rs appends the schema and instance
    message = f"the schema cannot be compiled to check its default (external references are never loaded): {reason}"
    return Issue(code="invalid_default", message=message, pointer=pointer)
