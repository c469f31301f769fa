"""The app fuzzed from its own OpenAPI document: no 5xx, every response as documented.

Schemathesis generates requests for every operation (bounded examples, derandomized so a failure
reproduces) and checks each response: not a server error, a documented status code, a body that
matches the documented schema, the documented content type. It runs on PostgreSQL, the stricter
store (it refuses NUL characters that SQLite would keep), once anonymous and once as admin, so
both the refusals and the code behind them are exercised.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from deployments.stack import Stack
from storage.database import reset_engine
from tests.support import auth

MAX_EXAMPLES = 30
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
OPERATIONS = [
    (method.upper(), path)
    for path, operations in create_app().openapi()["paths"].items()
    for method in operations
    if path != "/metrics"
]
CALLERS = {"anonymous": dict[str, str](), "admin": auth.admin()}


@pytest.fixture(scope="module")
def fuzz_schema(prefect_server: Stack, postgres_template: str) -> Iterator[Any]:
    """The app on one PostgreSQL database for the whole module (the fuzzer's data piles up in it)."""
    from tests.support.services import create_database, drop_database

    url = create_database(template=postgres_template)
    patch = pytest.MonkeyPatch()
    patch.setenv("MARKETPLACE_DATABASE__URL", url)
    patch.setenv("MARKETPLACE_PREFECT__API_URL", prefect_server.config.prefect_api_url)
    patch.setenv("MARKETPLACE_RATE_LIMIT__PUBLISH_LIMIT", "100000")
    reset_engine()
    try:
        with TestClient(create_app()) as client:  # runs the lifespan: the Prefect client is open
            yield schemathesis.openapi.from_asgi("/openapi.json", client.app)
    finally:
        reset_engine()
        patch.undo()
        drop_database(url)


@pytest.mark.parametrize("caller", sorted(CALLERS))
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_operation(fuzz_schema: Any, method: str, path: str, caller: str) -> None:
    operation = fuzz_schema[path][method]
    headers = CALLERS[caller]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    fuzz()


def test_what_the_fuzzer_found_stays_fixed(client: TestClient) -> None:
    """Each found once as a 500 on PostgreSQL: a NUL in a query parameter, an offset past bigint."""
    nul = client.get("/api/v1/services", params={"provider": "acme\x00"})
    assert (nul.status_code, nul.json()["error"]["details"][0]["pointer"]) == (422, "/query/provider")
    assert client.get("/api/v1/services/abc%00def").status_code == 422
    deep = client.get("/api/v1/services", params={"offset": str(10**30)})
    assert (deep.status_code, deep.json()["error"]["details"][0]["pointer"]) == (422, "/query/offset")
