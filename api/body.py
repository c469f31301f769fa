"""Reading a JSON request body within the size limit, with errors that say where.

Every body is hostile until read. It is refused cleanly (never a 500, nothing stored) when it is
another media type (415: YAML and the like are never parsed, so no YAML bomb can go off); over
the size limit (413); not UTF-8 or not JSON (422; NaN, Infinity and numbers a double cannot hold
included); nested deeper than MAX_DEPTH (422 with the pointer of the first container too deep,
checked before parsing, so neither the parser nor any later recursive code meets Python's
recursion limit); or when a string or member name holds U+0000 or an unpaired surrogate escape
such as "\\ud800" (422 with its pointer: PostgreSQL stores neither in text or jsonb, and they are
not text anyway). Everything else is kept verbatim.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

from fastapi import Request

from core.errors import DomainError, PayloadTooLargeError, SpecValidationError

MAX_DEPTH = 64
"""Deepest nesting of objects and arrays accepted; the top-level object is depth 1."""

JSON_MEDIA_TYPE = "application/json"
# A JSON string token, in the unrolled form (no backtracking, linear time).
_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_STRING_TOKEN = re.compile(_STRING, re.DOTALL)
_TOKEN = re.compile(_STRING + r"|[\[\]{},:]", re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"{": 1, "[": 1, "}": -1, "]": -1}
# Escapes that may decode to U+0000 or a surrogate; only then is the parsed body walked.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")
_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")


class UnsupportedMediaTypeError(DomainError):
    status_code = 415
    code = "unsupported_media_type"


async def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object: 415 unless JSON, 413 past `max_bytes` (before and while reading), else 422 if bad."""
    _require_json(request.headers.get("content-type"))
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(f"request body of {declared} bytes exceeds the limit of {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLargeError(f"request body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return _parse(b"".join(chunks))


def _require_json(content_type: str | None) -> None:
    """A body without a Content-Type is read as JSON; any other media type or charset is refused."""
    if content_type is None:
        return
    media_type, *params = (part.strip().lower() for part in content_type.split(";"))
    if media_type != JSON_MEDIA_TYPE and not (media_type.startswith("application/") and media_type.endswith("+json")):
        raise UnsupportedMediaTypeError(
            f"request body must be {JSON_MEDIA_TYPE}, not {media_type[:100]!r}",
            [{"pointer": "", "message": f"send Content-Type: {JSON_MEDIA_TYPE}", "code": "media_type"}],
        )
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            raise UnsupportedMediaTypeError(
                f"request body must be UTF-8, not charset {value.strip()[:40]!r}",
                [{"pointer": "", "message": "send the body in UTF-8", "code": "charset"}],
            )


def _invalid(message: str, detail: str, pointer: str = "", code: str = "body") -> SpecValidationError:
    return SpecValidationError(message, [{"pointer": pointer, "message": detail, "code": code}])


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")  # strict: overlong forms, encoded surrogates and stray bytes all fail
    except UnicodeDecodeError as exc:
        detail = f"invalid byte 0x{raw[exc.start]:02x} at offset {exc.start} ({exc.reason})"
        raise _invalid("request body is not UTF-8", detail, code="encoding") from exc
    too_deep = _too_deep(text)
    if too_deep is not None:
        raise _invalid(
            "request body is nested too deeply",
            f"objects and arrays may nest at most {MAX_DEPTH} levels",
            too_deep,
            code="depth",
        )
    try:
        body = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise _invalid("request body is not valid JSON", f"{exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except ValueError as exc:  # a number out of range: _finite_float, or an int past Python's digit limit
        raise _invalid("request body holds a number out of range", str(exc)[:200], code="number") from exc
    except RecursionError as exc:  # not reached after _too_deep; kept as a last line of defence
        raise _invalid("request body is nested too deeply", "nesting exceeds the parser's limit", code="depth") from exc
    if not isinstance(body, dict):
        raise _invalid("request body must be a JSON object", f"got {type(body).__name__}")
    if _SUSPECT_ESCAPE.search(text):
        _require_text(body)
    return body


def _no_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity, which are not JSON (RFC 8259) and that neither the
    # schema's minimum/maximum (NaN compares false) nor PostgreSQL's json type would take.
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"{literal[:50]} is out of the range of a double")
    return value


def _too_deep(text: str) -> str | None:
    """The JSON pointer of the first container nested deeper than MAX_DEPTH, or None.

    Strings are blanked out (a "[" inside one does not count), everything but brackets dropped,
    and the brackets summed as +1/-1: all at C speed (about 0.1 s for 2 million brackets). Only
    a body that is too deep is tokenized, to name the place.
    """
    if text.count("{") + text.count("[") <= MAX_DEPTH:
        return None
    brackets = _NOT_BRACKET.sub("", _STRING_TOKEN.sub('""', text))
    if max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) <= MAX_DEPTH:
        return None
    return _pointer_at_depth(text, MAX_DEPTH + 1)


def _pointer_at_depth(text: str, depth: int) -> str | None:
    """Pointer of the first container opened at `depth`, from the tokens before it; None if there is none."""
    frames: list[list[Any]] = []  # [is_object, member name or item index, expecting a name]
    for match in _TOKEN.finditer(text):
        lexeme = match.group()
        top = frames[-1] if frames else None
        if lexeme in ("{", "["):
            frames.append([lexeme == "{", None if lexeme == "{" else 0, True])
            if len(frames) >= depth:
                return "".join("/" + _escape(str(frame[1])) for frame in frames[:-1])
        elif lexeme in ("}", "]"):
            if frames:
                frames.pop()
        elif lexeme == ",":
            if top is not None and top[0]:
                top[2] = True
            elif top is not None:
                top[1] += 1
        elif lexeme == ":":
            if top is not None:
                top[2] = False
        elif top is not None and top[0] and top[2]:  # a member name
            try:
                top[1] = json.loads(lexeme)
            except ValueError:
                top[1] = lexeme[1:-1]
    return None


def _require_text(body: dict[str, Any]) -> None:
    """422 at the first string or member name holding U+0000 or an unpaired surrogate."""
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        pointer, node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            child = f"{pointer}/{_escape(str(key))}"
            for where, text in (("member name", key), ("string", value)):
                bad = _NOT_TEXT.search(text) if isinstance(text, str) else None
                if bad is not None:
                    raise _invalid(
                        f"request body holds a {where} with {_describe(bad.group())}",
                        f"{where}s must be Unicode text without NUL characters or unpaired surrogates",
                        child,
                        code="text",
                    )
            if isinstance(value, dict | list):
                stack.append((child, value))


def _describe(char: str) -> str:
    return "U+0000 (NUL)" if char == "\x00" else f"an unpaired surrogate \\u{ord(char):04x}"


def _escape(segment: str) -> str:
    """RFC 6901 escaping, with characters that cannot be shown (NUL, surrogates) as \\uXXXX."""
    escaped = segment.replace("~", "~0").replace("/", "~1")
    return _NOT_TEXT.sub(lambda m: f"\\u{ord(m.group()):04x}", escaped)
