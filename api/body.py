"""Reading a JSON request body within the size limit, with errors that say where."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from core.errors import PayloadTooLargeError, SpecValidationError


async def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object; 413 past `max_bytes` (checked before and while reading), 422 if not JSON."""
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


def _invalid(message: str, detail: str) -> SpecValidationError:
    return SpecValidationError(message, [{"pointer": "", "message": detail}])


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid("request body is not UTF-8", f"invalid byte at offset {exc.start}") from exc
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _invalid("request body is not valid JSON", f"{exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:
        raise _invalid("request body is nested too deeply", "nesting exceeds the parser's limit") from exc
    if not isinstance(body, dict):
        raise _invalid("request body must be a JSON object", f"got {type(body).__name__}")
    return body
