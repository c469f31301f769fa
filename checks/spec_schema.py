"""Shape check of a submitted spec against core/schemas/service-spec.schema.json.

The API calls this synchronously on every submission, so it stays free of
Prefect and the database. Business rules live in checks/validation.py.

The body is hostile, so the check is bounded: arrays longer than their maxItems are
reported before full validation (jsonschema's uniqueItems is quadratic on objects, so a
long array would otherwise hold the request for minutes); at most MAX_ISSUES findings
are listed, with how many there were in all; and a message never echoes more than a short
excerpt of the value it is about (jsonschema quotes whole values, which would send a 5 MB
string straight back).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib.resources import files
from itertools import islice
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from checks._once import built_once
from core.domain import Issue

# Read through importlib.resources so it also works from an installed wheel
# (pyproject ships core/schemas/*.json as package data).
_SCHEMA_RESOURCE = files("core") / "schemas" / "service-spec.schema.json"
MAX_ISSUES = 100
ROOT_POINTER = ""
# Errors read from the validator before sorting (the schema's bounded arrays keep a spec far below
# this); beyond MAX_ISSUES they are only counted.
_MAX_ERRORS_READ = 1000
_MAX_SHOWN = 80  # characters of a value quoted in a message


def json_pointer(parts: Iterable[str | int]) -> str:
    """RFC 6901 pointer for a path; '~' must be escaped before '/' or '~1' would be mangled."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


@built_once
def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(_SCHEMA_RESOURCE.read_text(encoding="utf-8"))
    # A broken schema file is a deployment bug: fail loudly on first use, not per request.
    Draft202012Validator.check_schema(schema)
    return schema


@built_once
def _validator() -> Draft202012Validator:
    # Built once per process: constructing it (resolver, format checker) costs more than
    # validating a spec. The schema has no remote $refs, so nothing is ever retrieved, and
    # validating never mutates the validator, so the worker's threads share it.
    return Draft202012Validator(_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)


def load_schema() -> dict[str, Any]:
    """The service-spec JSON Schema; a copy, so callers cannot corrupt the cached one."""
    return copy.deepcopy(_schema())


@dataclass(frozen=True)
class Total:
    """How many findings there were: exactly `count`, or (reading stopped early) at least `count`."""

    count: int
    exact: bool = True

    def describe(self) -> str:
        return f"{self.count}" if self.exact else f"at least {self.count}"


def schema_errors(body: object) -> list[Issue]:
    """Every schema violation of `body` (up to MAX_ISSUES), sorted by location, each pointing at the offending spot.

    A cut list ends with a `too_many_errors` finding that says how many there were in all.
    """
    listed, total = schema_report(body)
    return with_total(listed, total, ROOT_POINTER)


def schema_report(body: object) -> tuple[list[Issue], Total]:
    """The first MAX_ISSUES schema violations of `body`, sorted by location, and how many there are in all."""
    oversized = list(_oversized_arrays(_schema(), body, []))  # bounded: the schema's arrays are few
    if oversized:
        return oversized[:MAX_ISSUES], Total(len(oversized))
    errors = list(islice(_validator().iter_errors(body), _MAX_ERRORS_READ + 1))
    complete = len(errors) <= _MAX_ERRORS_READ
    errors = sorted(errors[:_MAX_ERRORS_READ], key=lambda e: (_sort_key(e.absolute_path), e.message))
    issues = [issue for error in errors for issue in _to_issues(error)]
    return issues[:MAX_ISSUES], Total(len(issues), exact=complete)


def with_total(listed: list[Issue], total: Total, pointer: str) -> list[Issue]:
    """`listed` as it is when complete; otherwise followed by a finding that says how many there were in all."""
    if total.exact and total.count <= len(listed):
        return listed
    message = f"{total.describe()} errors in all; the first {len(listed)} are listed"
    return [*listed, Issue(code="too_many_errors", message=message, pointer=pointer)]


def _oversized_arrays(schema: Mapping[str, Any], instance: object, path: list[str | int]) -> Iterator[Issue]:
    """maxItems violations, found by following only `properties` and `items`; long arrays are not entered."""
    limit = schema.get("maxItems")
    if isinstance(instance, list) and isinstance(limit, int) and len(instance) > limit:
        message = f"an array of {len(instance)} items is too long (at most {limit})"
        yield Issue(code="maxItems", message=message, pointer=json_pointer(path))
        return
    properties = schema.get("properties")
    if isinstance(instance, dict) and isinstance(properties, Mapping):
        for name, sub in properties.items():
            if name in instance and isinstance(sub, Mapping):
                yield from _oversized_arrays(sub, instance[name], [*path, name])
    items = schema.get("items")
    if isinstance(instance, list) and isinstance(items, Mapping):
        for index, item in enumerate(instance):
            yield from _oversized_arrays(items, item, [*path, index])


def _sort_key(path: Iterable[str | int]) -> list[tuple[bool, str | int]]:
    # Paths mix str keys and int indexes; tagging by type keeps them comparable
    # and sorts array items numerically (/rates/2 before /rates/10).
    return [(isinstance(part, str), part) for part in path]


def _to_issues(error: ValidationError) -> list[Issue]:
    keyword = str(error.validator)
    base = list(error.absolute_path)
    if keyword == "required":
        # jsonschema reports the object; point at the missing member instead.
        return [Issue(code=keyword, message=error.message, pointer=json_pointer([*base, _missing(error)]))]
    if keyword == "additionalProperties" and error.validator_value is False:
        return [
            Issue(code=keyword, message=f"{_excerpt_name(extra)} is not allowed here", pointer=pointer)
            for extra in _extras(error)
            for pointer in [json_pointer([*base, extra])]
        ]
    return [Issue(code=keyword, message=_message(error), pointer=json_pointer(base))]


def _message(error: ValidationError) -> str:
    """jsonschema's message, with the whole value it quotes cut down to an excerpt."""
    quoted = repr(error.instance)
    if len(quoted) <= _MAX_SHOWN or quoted not in error.message:
        return error.message[:1000]
    return error.message.replace(quoted, _excerpt(error.instance), 1)[:1000]


def excerpt(value: object) -> str:
    """repr(value) when short, else a short description: for messages quoting untrusted values."""
    shown = repr(value)
    return shown if len(shown) <= _MAX_SHOWN else _excerpt(value)


def _excerpt(value: object) -> str:
    if isinstance(value, str):
        return f"{value[: _MAX_SHOWN // 2]!r}... ({len(value)} characters)"
    if isinstance(value, list):
        return f"an array of {len(value)} items"
    if isinstance(value, dict):
        return f"an object of {len(value)} members"
    return repr(value)[:_MAX_SHOWN] + "..."


def _excerpt_name(name: str) -> str:
    return repr(name) if len(name) <= _MAX_SHOWN else _excerpt(name)


def _missing(error: ValidationError) -> str:
    # jsonschema yields one error per missing property but keeps the name only in the message.
    required = error.validator_value if isinstance(error.validator_value, list) else []
    absent = [p for p in required if isinstance(error.instance, Mapping) and p not in error.instance]
    named = [p for p in absent if error.message == f"{p!r} is a required property"]
    return str((named or absent or [""])[0])


def _extras(error: ValidationError) -> list[str]:
    declared = error.schema.get("properties", {}) if isinstance(error.schema, Mapping) else {}
    patterns = error.schema.get("patternProperties", {}) if isinstance(error.schema, Mapping) else {}
    instance = error.instance if isinstance(error.instance, Mapping) else {}
    return sorted(
        str(key) for key in instance if key not in declared and not any(re.search(p, str(key)) for p in patterns)
    )
