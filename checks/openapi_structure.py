"""Structure of an OpenAPI 3.1 document: the official JSON Schema, Schema Objects included (jsonschema-rs).

The OpenAPI Initiative's schema (shipped with openapi-spec-validator) leaves Schema Objects open
(`$dynamicRef: "#meta"`); the wrapper below binds that anchor to the OpenAPI 3.1 base dialect, as
the OAI's own "schema-base" does, so every Schema Object in the document (request bodies, nested
properties and headers included) is checked against the dialect's meta-schema in the same pass.

The validator is compiled once per process (~4 ms) and shared: jsonschema-rs validators are
immutable and safe to call from several threads at once (flows run in threads of one worker).
Document `$ref`s are data to it, never resolved; the schemas it compiles refer only to each other.
Formats are not asserted (as before): a strict `uri-reference` check would refuse common references
such as "#/paths/~1pets~1{id}", and patterns are checked as regular expressions elsewhere.
"""

from __future__ import annotations

import json
import threading
from importlib.resources import files
from itertools import islice
from typing import Any, NoReturn

import jsonschema_rs

from checks.openapi_refs import ROOT
from checks.spec_schema import MAX_ISSUES, Total, excerpt, json_pointer, with_total
from core.domain import Issue

OAS_SCHEMA_FILE = files("openapi_spec_validator") / "resources" / "schemas" / "v3.1" / "schema.json"
DIALECT_FILE = files("openapi_schema_validator") / "schemas" / "oas3.1" / "metaschema.json"
VOCABULARY_FILE = files("openapi_schema_validator") / "schemas" / "oas3.1" / "vocabularies" / "base"
OAS_DIALECT = "https://spec.openapis.org/oas/3.1/dialect/base"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
# Dialects a Schema Object ($schema) or the document (jsonSchemaDialect) may name: both are
# checked with the OpenAPI dialect's meta-schema, which extends 2020-12.
KNOWN_DIALECTS = (OAS_DIALECT, DRAFT_2020_12)
_WRAPPER_ID = "urn:x-marketplace:openapi-3.1-document"
_MAX_ERRORS_READ = 1000
_MAX_MESSAGE = 300
# Where an unexpected member is reported, what to say about it.
_UNEXPECTED = {
    "responses": "{key!r} is not a response code: use 100-599, 1XX-5XX or default",
    "paths": "{key!r} is not a path: paths start with '/'",
}

_lock = threading.Lock()
_compiled: list[Any] = []


def _refuse(uri: str) -> NoReturn:
    raise ValueError(f"refusing to load {uri!r}: OpenAPI validation never fetches anything")


def dialect_resources() -> list[tuple[str, Any]]:
    """The OpenAPI 3.1 dialect and its vocabulary meta-schema, for a jsonschema-rs Registry."""
    dialect = json.loads(DIALECT_FILE.read_text(encoding="utf-8"))
    vocabulary = json.loads(VOCABULARY_FILE.read_text(encoding="utf-8"))
    return [(dialect["$id"], dialect), (vocabulary["$id"], vocabulary)]


def _compile() -> Any:
    oas = json.loads(OAS_SCHEMA_FILE.read_text(encoding="utf-8"))
    wrapper = {
        "$schema": DRAFT_2020_12,
        "$id": _WRAPPER_ID,
        "$ref": oas["$id"],
        "properties": {"jsonSchemaDialect": {"$ref": "#/$defs/known-dialect"}},
        "$defs": {
            "known-dialect": {"enum": list(KNOWN_DIALECTS)},
            "schema": {
                "$dynamicAnchor": "meta",
                "$ref": OAS_DIALECT,
                "properties": {"$schema": {"$ref": "#/$defs/known-dialect"}},
            },
        },
    }
    registry = jsonschema_rs.Registry([(oas["$id"], oas), *dialect_resources()], retriever=_refuse)
    return jsonschema_rs.validator_for(wrapper, registry=registry, retriever=_refuse, validate_formats=False)


def validator() -> Any:
    """The compiled document validator, built on first use; one per process."""
    if not _compiled:
        with _lock:
            if not _compiled:
                _compiled.append(_compile())
    return _compiled[0]


def structural_issues(doc: dict[str, Any]) -> list[Issue]:
    """Every place where the document departs from the OpenAPI 3.1 schema, sorted by location."""
    compiled = validator()
    if compiled.is_valid(doc):  # stops at nothing to report, and is ~15% faster than collecting errors
        return []
    seen: set[tuple[str, str]] = set()
    issues = []
    errors = list(islice(compiled.iter_errors(doc), _MAX_ERRORS_READ + 1))
    # Branches of oneOf/if-then report the same fault several times over; keep one of each.
    for error in errors[:_MAX_ERRORS_READ]:
        for issue in _to_issues(error):
            if (issue.pointer, issue.message) not in seen:
                seen.add((issue.pointer, issue.message))
                issues.append(issue)
    issues.sort(key=lambda i: (i.pointer, i.message))
    total = Total(len(issues), exact=len(errors) <= _MAX_ERRORS_READ)
    return with_total(issues[:MAX_ISSUES], total, ROOT)


def _to_issues(error: Any) -> list[Issue]:
    path = list(error.instance_path)
    pointer = ROOT + json_pointer(path)
    kind = error.kind.name
    if kind in ("additionalProperties", "unevaluatedProperties"):
        template = _UNEXPECTED.get(str(path[-1]) if path else "", "{key!r} is not allowed here")
        return [
            Issue(code="openapi_schema", message=template.format(key=key), pointer=pointer + json_pointer([key]))
            for key in error.kind.unexpected
        ]
    if kind == "enum" and "known-dialect" in error.schema_path:
        message = (
            f"Unknown JSON Schema dialect {excerpt(error.instance)}: Schema Objects are checked with the "
            f"OpenAPI 3.1 dialect ({OAS_DIALECT}) or JSON Schema 2020-12 ({DRAFT_2020_12})"
        )
        return [Issue(code="schema_dialect", message=message, pointer=pointer)]
    schema_path = list(error.schema_path)
    if kind == "oneOf" and schema_path[-3:-1] in (["$defs", "parameter"], ["$defs", "header"]):
        what = "a parameter" if schema_path[-2] == "parameter" else "a header"
        return [
            Issue(code="openapi_schema", message=f"{what} needs exactly one of schema and content", pointer=pointer)
        ]
    return [Issue(code="openapi_schema", message=_message(error), pointer=pointer)]


def _message(error: Any) -> str:
    """jsonschema-rs's message, with the value it quotes (a whole path item, say) cut to an excerpt."""
    message = str(error.message)
    if len(message) <= _MAX_MESSAGE:
        return message
    quoted = json.dumps(error.instance, separators=(",", ":"), ensure_ascii=False)
    if message.startswith(quoted):
        message = excerpt(error.instance) + message[len(quoted) :]
    return message if len(message) <= _MAX_MESSAGE else message[:_MAX_MESSAGE] + "..."
