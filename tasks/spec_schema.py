"""Shape check of a submitted spec against core/schemas/service-spec.schema.json.

The API calls this synchronously on every submission, so it stays free of
Prefect and the database. Business rules live in tasks/validation.py.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib.resources import files
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from core.domain import Issue

# Read through importlib.resources so it also works from an installed wheel
# (pyproject ships core/schemas/*.json as package data).
_SCHEMA_RESOURCE = files("core") / "schemas" / "service-spec.schema.json"


def json_pointer(parts: Iterable[str | int]) -> str:
    """RFC 6901 pointer for a path; '~' must be escaped before '/' or '~1' would be mangled."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(_SCHEMA_RESOURCE.read_text(encoding="utf-8"))
    # A broken schema file is a deployment bug: fail loudly on first use, not per request.
    Draft202012Validator.check_schema(schema)
    return schema


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    # The schema has no remote $refs, so the default registry never retrieves anything.
    return Draft202012Validator(_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)


def load_schema() -> dict[str, Any]:
    """The service-spec JSON Schema; a copy, so callers cannot corrupt the cached one."""
    return copy.deepcopy(_schema())


def schema_errors(body: object) -> list[Issue]:
    """Every schema violation of `body`, sorted by location, each pointing at the offending spot."""
    errors = sorted(_validator().iter_errors(body), key=lambda e: (_sort_key(e.absolute_path), e.message))
    return [issue for error in errors for issue in _to_issues(error)]


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
            Issue(code=keyword, message=f"{extra!r} is not allowed here", pointer=json_pointer([*base, extra]))
            for extra in _extras(error)
        ]
    return [Issue(code=keyword, message=error.message, pointer=json_pointer(base))]


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
