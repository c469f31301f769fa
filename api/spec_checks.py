"""Checks the API makes on a submitted body before anything is stored or any run is started.

Each raises SpecValidationError (422) with a JSON pointer per problem. A list of problems is cut
at MAX_ISSUES, and then the error says how many there were in all (message and `total`).
"""

from __future__ import annotations

import difflib
import functools
from typing import Any

from checks.spec_schema import MAX_ISSUES, Total, excerpt, json_pointer, load_schema, schema_report
from checks.validation import endpoint_host_issues
from core.domain import Issue
from core.errors import SpecValidationError
from core.settings import Settings

_MAX_HINTED_NAME = 64  # longer names get no "did you mean" (difflib is quadratic in the worst case)


def require_schema(spec: dict[str, Any]) -> None:
    """422 listing the spec's JSON Schema errors with their pointers, and how many there are in all."""
    listed, total = schema_report(spec)
    if listed:
        raise _refusal("the service spec", listed, total)


def require_public_endpoint(spec: dict[str, Any], settings: Settings) -> None:
    """422 when the endpoint URL names a loopback, private, link-local or metadata host, unless the
    settings allow insecure endpoints (never in production): refused before a run is started for it.

    Judged by spelling only (checks.validation.endpoint_host_issues says why no DNS here).
    """
    issues = endpoint_host_issues(spec, settings)
    if issues:
        raise SpecValidationError("the endpoint URL must name a publicly routable host", _details(issues))


def require_known_fields(changes: dict[str, Any]) -> None:
    """422 naming each member of an update that is no field of a service spec (a typo, most likely)."""
    known = _spec_fields()
    unknown = [
        Issue(code="unknown_field", message=_no_such_field(name, known), pointer=json_pointer([name]))
        for name in changes
        if name not in known
    ]
    if unknown:
        raise _refusal("the update", unknown[:MAX_ISSUES], Total(len(unknown)), noun="unknown field(s)")


@functools.cache
def _spec_fields() -> tuple[str, ...]:
    return tuple(load_schema()["properties"])


def _no_such_field(name: str, known: tuple[str, ...]) -> str:
    message = f"{excerpt(name)} is not a field of a service spec"
    close = difflib.get_close_matches(name, known, n=1) if len(name) <= _MAX_HINTED_NAME else []
    return f"{message}; did you mean {close[0]!r}?" if close else message


def _refusal(subject: str, listed: list[Issue], total: Total, noun: str = "error(s)") -> SpecValidationError:
    message = f"{subject} has {total.describe()} {noun}"
    cut = not total.exact or total.count > len(listed)
    if cut:
        message += f"; the first {len(listed)} are listed"
    return SpecValidationError(message, _details(listed), total=total.count if cut else None)


def _details(issues: list[Issue]) -> list[dict[str, Any]]:
    return [{"pointer": i.pointer, "message": i.message, "code": i.code} for i in issues]
