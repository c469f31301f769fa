"""The API's OpenAPI document declares bearer authentication, per operation (api/openapi.py)."""

from __future__ import annotations

from typing import Any

import pytest

from api.app import create_app
from api.openapi import declare_optional_bearer

BEARER = [{"bearerAuth": []}]
OPTIONAL = [{"bearerAuth": []}, {}]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app().openapi()


def security(document: dict[str, Any], method: str, path: str) -> Any:
    return document["paths"][path][method].get("security")


def test_the_bearer_scheme_is_declared_once(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert list(schemes) == ["bearerAuth"]
    assert schemes["bearerAuth"] | {"description": ""} == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "",
    }


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("post", "/api/v1/services", BEARER),
        ("put", "/api/v1/services/{service_id}", BEARER),
        ("delete", "/api/v1/services/{service_id}", BEARER),
        ("post", "/api/v1/services/{service_id}/versions", BEARER),
        ("get", "/api/v1/approvals", BEARER),
        ("post", "/api/v1/approvals/{service_id}", BEARER),
        ("get", "/api/v1/audit", BEARER),
        ("get", "/api/v1/events", BEARER),
        ("get", "/api/v1/webhooks/deliveries", BEARER),
        ("post", "/api/v1/services/{service_id}/subscriptions", BEARER),
        # Public when live, more with a token: bearer, or nothing.
        ("get", "/api/v1/services", OPTIONAL),
        ("get", "/api/v1/services/{service_id}", OPTIONAL),
        ("get", "/api/v1/services/{service_id}/status", OPTIONAL),
        ("get", "/api/v1/services/{service_id}/history", OPTIONAL),
        # Public.
        ("post", "/api/v1/services/search", None),
        ("get", "/api/v1/schemas/service-spec", None),
        ("get", "/health", None),
    ],
)
def test_each_operation_says_whether_it_needs_a_token(
    document: dict[str, Any], method: str, path: str, expected: Any
) -> None:
    assert security(document, method, path) == expected


def test_every_operation_that_may_answer_401_declares_the_token(document: dict[str, Any]) -> None:
    checked = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if "401" in operation.get("responses", {}):
                assert operation.get("security") in (BEARER, OPTIONAL), f"{method} {path}"
                checked += 1
    assert checked > 20


def test_a_token_required_anyway_is_not_made_optional() -> None:
    document = {
        "components": {"securitySchemes": {"bearerAuthOptional": {"type": "http"}}},
        "paths": {"/x": {"get": {"security": [{"bearerAuth": []}, {"bearerAuthOptional": []}]}}},
    }
    assert declare_optional_bearer(document)["paths"]["/x"]["get"]["security"] == BEARER
    assert document["components"]["securitySchemes"] == {"bearerAuth": {"type": "http"}}
