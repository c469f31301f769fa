"""Large, realistic, deterministic OpenAPI 3.1 documents (for the validation benchmark and its tests).

A document describes `resources` REST resources, each with a collection and an item path (the
item path declares its id parameter at path-item level), list/create/read/replace/update/delete
operations with query and header parameters, request bodies and responses that refer to component
schemas, parameters and responses through local $refs, plus nested schemas (allOf, arrays of
references to other resources, enums, formats, defaults, examples).
"""

from __future__ import annotations

import json
from typing import Any

_WORDS = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
)


def _text(seed: int, words: int) -> str:
    return " ".join(_WORDS[(seed * 7 + i * 3) % len(_WORDS)] for i in range(words)).capitalize() + "."


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: dict[str, Any], example: object = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def _resource_schemas(i: int, resources: int) -> dict[str, Any]:
    name, other = f"Resource{i}", f"Resource{(i + 1) % resources}"
    properties: dict[str, Any] = {
        "id": {"type": "string", "format": "uuid", "readOnly": True, "description": _text(i, 6)},
        "name": {"type": "string", "minLength": 1, "maxLength": 200, "description": _text(i + 1, 10)},
        "status": {"type": "string", "enum": ["draft", "active", "retired"], "default": "draft"},
        "priority": {"type": "integer", "minimum": 0, "maximum": 10, "default": 5},
        "score": {"type": "number", "format": "double", "exclusiveMinimum": 0},
        "createdAt": {"type": "string", "format": "date-time", "readOnly": True},
        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 64}},
        "owner": {"$ref": "#/components/schemas/Owner"},
        "related": {"type": "array", "items": {"$ref": f"#/components/schemas/{other}Link"}, "maxItems": 50},
        "note": {"type": ["string", "null"], "description": _text(i + 2, 14)},
    }
    for extra in range(6):
        properties[f"field{extra}"] = {
            "type": "string",
            "pattern": "^[a-z0-9-]+$",
            "description": _text(i * 11 + extra, 12),
            "examples": [f"value-{i}-{extra}"],
        }
    return {
        name: {
            "type": "object",
            "description": _text(i, 24),
            "required": ["id", "name", "status"],
            "properties": properties,
        },
        f"{name}Create": {
            "allOf": [{"$ref": f"#/components/schemas/{name}"}],
            "required": ["name"],
            "description": _text(i + 3, 12),
        },
        f"{name}Link": {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "string"}, "href": {"type": "string", "format": "uri-reference"}},
        },
        f"{name}Page": {
            "type": "object",
            "required": ["items"],
            "properties": {
                "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}},
                "nextCursor": {"type": ["string", "null"]},
            },
        },
    }


def _resource_paths(i: int) -> dict[str, Any]:
    name, plural = f"Resource{i}", f"resource{i}s"
    item = {"name": f"{plural[:-1]}Id", "in": "path", "required": True, "schema": {"type": "string"}}
    errors = {"404": _ref("responses", "NotFound"), "default": _ref("responses", "Error")}
    return {
        f"/v1/{plural}": {
            "summary": _text(i, 5),
            "get": {
                "operationId": f"list{name}",
                "tags": [f"tag{i % 10}"],
                "description": _text(i + 4, 30),
                "parameters": [
                    _ref("parameters", "Limit"),
                    _ref("parameters", "Cursor"),
                    {"name": "status", "in": "query", "schema": {"type": "string", "enum": ["draft", "active"]}},
                    {"name": "X-Request-Id", "in": "header", "schema": {"type": "string", "format": "uuid"}},
                ],
                "responses": {
                    "200": {"description": _text(i, 4), "content": _json(_ref("schemas", f"{name}Page"))},
                    **errors,
                },
            },
            "post": {
                "operationId": f"create{name}",
                "tags": [f"tag{i % 10}"],
                "description": _text(i + 5, 30),
                "requestBody": {"required": True, "content": _json(_ref("schemas", f"{name}Create"))},
                "responses": {
                    "201": {
                        "description": _text(i, 4),
                        "headers": {"Location": {"schema": {"type": "string", "format": "uri-reference"}}},
                        "content": _json(_ref("schemas", name), {"id": "x", "name": "y", "status": "draft"}),
                    },
                    "400": _ref("responses", "BadRequest"),
                    **errors,
                },
            },
        },
        f"/v1/{plural}/{{{item['name']}}}": {
            "parameters": [item],
            "get": {
                "operationId": f"get{name}",
                "description": _text(i + 6, 24),
                "responses": {"200": {"description": _text(i, 4), "content": _json(_ref("schemas", name))}, **errors},
            },
            "put": {
                "operationId": f"replace{name}",
                "description": _text(i + 7, 24),
                "requestBody": {"content": _json(_ref("schemas", f"{name}Create"))},
                "responses": {"200": {"description": _text(i, 4), "content": _json(_ref("schemas", name))}, **errors},
            },
            "patch": {
                "operationId": f"update{name}",
                "description": _text(i + 8, 24),
                "parameters": [{"name": "If-Match", "in": "header", "required": True, "schema": {"type": "string"}}],
                "requestBody": {"content": {"application/merge-patch+json": {"schema": _ref("schemas", name)}}},
                "responses": {"200": {"description": _text(i, 4), "content": _json(_ref("schemas", name))}, **errors},
            },
            "delete": {
                "operationId": f"delete{name}",
                "description": _text(i + 9, 24),
                "responses": {"204": {"description": _text(i, 3)}, **errors},
            },
        },
    }


def _shared_components() -> dict[str, Any]:
    error = {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "array"}},
    }
    return {
        "schemas": {
            "Error": error,
            "Owner": {
                "type": "object",
                "required": ["id"],
                "properties": {"id": {"type": "string"}, "email": {"type": "string", "format": "email"}},
            },
        },
        "parameters": {
            "Limit": {
                "name": "limit",
                "in": "query",
                "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
            },
            "Cursor": {"name": "cursor", "in": "query", "schema": {"type": "string"}},
        },
        "responses": {
            "NotFound": {"description": "Not found", "content": _json(_ref("schemas", "Error"))},
            "BadRequest": {"description": "Invalid request", "content": _json(_ref("schemas", "Error"))},
            "Error": {"description": "Unexpected error", "content": _json(_ref("schemas", "Error"))},
        },
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
    }


def openapi_document(resources: int = 161, server_url: str = "https://api.acme.example/v1") -> dict[str, Any]:
    """A valid OpenAPI 3.1 document of `resources` resources (161: just over 1 MiB of compact JSON)."""
    components = _shared_components()
    paths: dict[str, Any] = {}
    for i in range(resources):
        components["schemas"].update(_resource_schemas(i, resources))
        paths.update(_resource_paths(i))
    return {
        "openapi": "3.1.0",
        "info": {"title": "Acme platform", "version": "2.4.0", "description": _text(0, 40)},
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}],
        "tags": [{"name": f"tag{t}", "description": _text(t, 8)} for t in range(10)],
        "paths": paths,
        "components": components,
    }


def compact_size(value: object) -> int:
    """Bytes of compact UTF-8 JSON, the measure the metadata phase applies to a spec."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
