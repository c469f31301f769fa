"""405 with `Allow` for a known path asked with a method it does not take (api/methods.py).

No request here reaches a route's code (405 is decided before), so the app runs without its
lifespan, database or Prefect server.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app

SERVICES = "/api/v1/services"


@pytest.fixture(scope="module")
def app_client() -> TestClient:
    return TestClient(create_app())


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        # Fixed paths that a parametrised route (/services/{service_id}) would otherwise swallow.
        ("GET", f"{SERVICES}/search", "POST"),
        ("PUT", f"{SERVICES}/search", "POST"),
        ("DELETE", f"{SERVICES}/search", "POST"),
        # Fixed paths, and parametrised ones whose routes take other methods.
        ("PUT", SERVICES, "GET, POST"),
        ("PATCH", f"{SERVICES}/0b8e6bd5-5a9e-4a57-9b3e-8f9c1c2d3e4f", "DELETE, GET, PUT"),
        ("PUT", f"{SERVICES}/abc/versions", "GET, POST"),
        ("GET", "/api/v1/approvals/abc", "POST"),
        ("DELETE", "/api/v1/audit", "GET"),
        ("POST", "/health", "GET"),
        ("POST", "/metrics", "GET"),
    ],
)
def test_a_known_path_with_another_method_gets_405_with_allow(
    app_client: TestClient, method: str, path: str, allow: str
) -> None:
    response = app_client.request(method, path)
    assert response.status_code == 405, response.text
    assert response.headers["Allow"] == allow
    assert response.json() == {
        "error": {
            "code": "method_not_allowed",
            "message": f"{method} is not allowed on this path; it allows {allow}",
            "details": [],
        }
    }


def test_an_unknown_path_is_still_404(app_client: TestClient) -> None:
    for method in ("GET", "POST"):
        response = app_client.request(method, "/api/v1/nothing-here")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "http_404"
