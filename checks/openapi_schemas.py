"""Checks of an OpenAPI document's Schema Objects that no meta-schema can express.

`pattern` and `patternProperties` keys must be regular expressions (ECMA-262, the dialect of
JSON Schema, as jsonschema-rs reads them); a root schema with allOf must define every name it
requires, in its own properties or in its allOf schemas (openapi-spec-validator's rule, kept);
and a default must validate against the schema it sits in (checks.openapi_defaults).

Schema trees are walked by their subschema keywords only, never into data (default, example,
enum, const), each node once.
"""

from __future__ import annotations

import functools
from typing import Any

import jsonschema_rs

from checks._once import built_once
from checks.openapi_defaults import default_issues
from checks.openapi_refs import Path, RefChecker, pointer_of
from checks.spec_schema import excerpt
from core.domain import Issue

# How the walk treats each member of a Schema Object: a subschema, a map or a list of them, or
# one of the members it checks. Anything else (type, enum, example, const ...) is not entered.
_ONE, _MAP, _LIST, _DEFAULT, _PATTERN, _PATTERNS = range(6)
_MEMBERS = {
    **dict.fromkeys(
        (
            "additionalProperties",
            "items",
            "not",
            "if",
            "then",
            "else",
            "contains",
            "propertyNames",
            "unevaluatedItems",
            "unevaluatedProperties",
            "contentSchema",
            "additionalItems",
        ),
        _ONE,
    ),
    **dict.fromkeys(("properties", "$defs", "definitions", "dependentSchemas"), _MAP),
    **dict.fromkeys(("allOf", "anyOf", "oneOf", "prefixItems"), _LIST),
    "default": _DEFAULT,
    "pattern": _PATTERN,
    "patternProperties": _PATTERNS,
}


@built_once
def _regex_checker() -> Any:
    return jsonschema_rs.validator_for({"format": "regex"}, validate_formats=True)


@functools.lru_cache(maxsize=4096)
def _is_regex(pattern: str) -> bool:
    return bool(_regex_checker().is_valid(pattern))


class SchemaChecks:
    """Collects Schema Objects as the document walk meets them; issues() runs the checks."""

    def __init__(self, refs: RefChecker) -> None:
        self.refs = refs
        self.seen: set[int] = set()
        self.found: list[Issue] = []
        self.defaults: list[tuple[dict[str, Any], Path]] = []

    def root(self, schema: object, path: Path) -> None:
        """Walk the schema tree at `path` (a root: allOf's required rule applies to it)."""
        if type(schema) is dict and len(schema) == 1 and "$ref" in schema:
            return  # the usual media type schema: its target is walked where it is defined
        stack: list[tuple[object, Path]] = [(schema, path)]
        members = _MEMBERS
        push = stack.append
        is_root = True
        while stack:
            node, path = stack.pop()
            if type(node) is not dict or id(node) in self.seen:
                continue
            self.seen.add(id(node))
            for key, value in node.items():
                kind = members.get(key)
                if kind is None:  # most members (type, description ...) need nothing
                    continue
                if kind == _ONE:
                    push((value, (path, key)))
                elif kind == _LIST and type(value) is list:
                    for index, sub in enumerate(value):
                        push((sub, ((path, key), index)))
                elif kind in (_MAP, _PATTERNS) and type(value) is dict:
                    where = (path, key)
                    for name, sub in value.items():
                        push((sub, (where, name)))
                        if kind == _PATTERNS:
                            self._pattern(name, (where, name))
                elif kind == _DEFAULT:
                    self.defaults.append((node, path))
                elif kind == _PATTERN and type(value) is str:
                    self._pattern(value, (path, key))
            if is_root and "allOf" in node:
                self._required(node, path)
            is_root = False

    def issues(self) -> list[Issue]:
        return [*self.found, *default_issues(self.defaults, self.refs)]

    def _pattern(self, pattern: str, path: Path) -> None:
        if not _is_regex(pattern):
            message = f"{excerpt(pattern)} is not a valid regular expression (ECMA-262)"
            self.found.append(Issue(code="schema_pattern", message=message, pointer=pointer_of(path)))

    def _required(self, node: dict[str, Any], path: Path) -> None:
        required = node.get("required")
        if type(required) is not list:
            return
        defined = set(node.get("properties") or ()) | self._defined(node.get("allOf"))
        missing = [name for name in required if name not in defined]
        if missing:
            message = f"required {missing} defined neither in properties nor in the allOf schemas"
            self.found.append(Issue(code="schema_required", message=message, pointer=pointer_of((path, "required"))))

    def _defined(self, subschemas: object) -> set[str]:
        """Property names reachable through allOf/anyOf/oneOf/items/not, references followed."""
        names: set[str] = set()
        stack = list(subschemas) if type(subschemas) is list else []
        visited: set[int] = set()
        while stack:
            node = stack.pop()
            if type(node) is not dict or id(node) in visited:
                continue
            visited.add(id(node))
            if type(node.get("$ref")) is str:
                stack.append(self.refs.resolve(node["$ref"]))
            if type(node.get("properties")) is dict:
                names.update(node["properties"])
            for key in ("allOf", "anyOf", "oneOf"):
                if type(node.get(key)) is list:
                    stack.extend(node[key])
            stack.extend(node[key] for key in ("items", "not") if key in node)
        return names
