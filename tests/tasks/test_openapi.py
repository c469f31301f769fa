"""OpenAPI 3.1 validation (tasks/openapi.py), as a pure function."""

from __future__ import annotations

import copy
import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from core.domain import Outcome, Phase
from core.settings import LimitSettings, Settings
from tasks.openapi import _library_issues, reference_issues, validate_openapi
from tests.tasks.test_spec_schema import EXAMPLE

SETTINGS = Settings()

PET = {
    "type": "object",
    "required": ["id", "name"],
    "properties": {"id": {"type": "integer"}, "name": {"type": "string"}, "tag": {"type": "string"}},
}
DOC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Acme chat", "version": "1.0.0"},
    "paths": {
        "/pets": {
            "get": {
                "operationId": "listPets",
                "responses": {
                    "200": {
                        "description": "ok",
                        "content": {
                            "application/json": {
                                "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Pet"}}
                            }
                        },
                    }
                },
            },
            "post": {"operationId": "addPet", "responses": {"201": {"description": "created"}}},
        },
        "/pets/{id}": {
            "get": {
                "operationId": "getPet",
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "responses": {"200": {"$ref": "#/components/responses/OnePet"}},
            }
        },
    },
    "components": {
        "schemas": {"Pet": PET},
        "responses": {
            "OnePet": {
                "description": "one pet",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}},
            }
        },
    },
}


def spec_with(doc: object) -> dict[str, Any]:
    spec = copy.deepcopy(EXAMPLE)
    spec["openApiSpec"] = doc
    return spec


def run(doc: object, settings: Settings = SETTINGS) -> list[tuple[str, str]]:
    outcome = validate_openapi(spec_with(doc), settings)
    return [(i.code, i.pointer) for i in outcome.errors]


@pytest.fixture
def doc() -> dict[str, Any]:
    return copy.deepcopy(DOC)


def test_valid_doc_passes_with_evidence(doc: dict[str, Any]) -> None:
    outcome = validate_openapi(spec_with(doc), SETTINGS)
    assert outcome.phase is Phase.OPENAPI_VALIDATION
    assert outcome.outcome is Outcome.PASSED, outcome.errors
    assert outcome.evidence["paths"] == 2
    assert outcome.evidence["operations"] == 3
    assert outcome.evidence["validation_ms"] >= 0


def test_no_doc_is_skipped() -> None:
    outcome = validate_openapi(copy.deepcopy(EXAMPLE), SETTINGS)
    assert outcome.outcome is Outcome.SKIPPED
    assert outcome.passed


@pytest.mark.parametrize(
    ("patch", "said"),
    [
        ({"openapi": "3.0.3"}, "declares '3.0.3'"),
        ({"openapi": "3.2.0"}, "declares '3.2.0'"),
        ({"openapi": 3.1}, "declares 3.1"),
        ({"openapi": None, "swagger": "2.0"}, "is Swagger '2.0'"),
    ],
)
def test_other_versions_rejected(doc: dict[str, Any], patch: dict[str, Any], said: str) -> None:
    doc.update(patch)
    doc = {k: v for k, v in doc.items() if v is not None}
    (issue,) = validate_openapi(spec_with(doc), SETTINGS).errors
    assert (issue.code, issue.pointer) == ("openapi_version", "/openApiSpec/openapi")
    assert said in issue.message
    assert "only OpenAPI 3.1.x is accepted" in issue.message


def test_missing_version_and_non_object() -> None:
    assert run({"info": {}}) == [("openapi_version", "/openApiSpec/openapi")]
    assert run(["not", "a", "doc"]) == [("openapi_version", "/openApiSpec")]


def test_structural_errors_point_into_the_document(doc: dict[str, Any]) -> None:
    doc["paths"]["/pets"]["post"]["responses"]["201"]["description"] = 5
    del doc["info"]["title"]
    found = run(doc)
    assert ("openapi_schema", "/openApiSpec/paths/~1pets/post/responses/201/description") in found
    assert ("openapi_schema", "/openApiSpec/info") in found  # missing title
    assert {code for code, _ in found} == {"openapi_schema"}


def test_semantic_errors_are_reported(doc: dict[str, Any]) -> None:
    doc["paths"]["/pets"]["post"]["operationId"] = "listPets"
    doc["paths"]["/pets/{id}"]["get"]["parameters"] = []
    outcome = validate_openapi(spec_with(doc), SETTINGS)
    messages = [i.message for i in outcome.errors]
    assert any("Operation ID 'listPets'" in m for m in messages)
    assert any("Path parameter 'id'" in m for m in messages)
    assert {(i.code, i.pointer) for i in outcome.errors} == {("openapi_semantic", "/openApiSpec")}


def test_ref_to_the_wrong_kind_of_object_fails_cleanly(doc: dict[str, Any]) -> None:
    # Structurally valid, but the parameter it resolves to has no name: the library
    # raises KeyError deep inside; that must become a finding, not a crashed task.
    doc["paths"]["/pets/{id}"]["get"]["parameters"] = [{"$ref": "#/components/schemas/Pet"}]
    assert run(doc) == [("openapi_semantic", "/openApiSpec")]


def test_invalid_default_value_is_reported(doc: dict[str, Any]) -> None:
    doc["components"]["schemas"]["Pet"]["properties"]["id"]["default"] = "one"
    assert run(doc) == [("openapi_semantic", "/openApiSpec")]


def test_path_limit_stops_before_validating(doc: dict[str, Any]) -> None:
    assert run(doc, Settings(limits=LimitSettings(max_openapi_paths=1))) == [("size", "/openApiSpec/paths")]


# --- references: never fetched -----------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        body = b'{"type": "integer", "description": "fetched"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []
    handler = type("Handler", (_Recorder,), {"hits": hits})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}", hits
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def test_server_fixture_really_records(server: tuple[str, list[str]]) -> None:
    # Guards the tests below: zero hits must mean "not fetched", not "not listening".
    import urllib.request

    base, hits = server
    with urllib.request.urlopen(f"{base}/probe", timeout=5) as response:
        assert response.status == 200
    assert hits == ["/probe"]


def remote_ref_docs(base: str) -> dict[str, tuple[dict[str, Any], str]]:
    d = copy.deepcopy
    schema_ref = d(DOC)
    schema_ref["components"]["schemas"]["Remote"] = {"$ref": f"{base}/schema.json"}
    path_ref = d(DOC)
    path_ref["paths"]["/remote"] = {"$ref": f"{base}/path.json#/item"}
    dynamic = d(DOC)
    dynamic["components"]["schemas"]["Pet"]["properties"]["tag"] = {"$dynamicRef": f"{base}/dyn.json"}
    dynamic["components"]["schemas"]["Pet"]["default"] = {"id": 1, "name": "x", "tag": "t"}
    in_default = d(DOC)
    in_default["components"]["schemas"]["Pet"]["default"] = {"$ref": f"{base}/default.json"}
    file_ref = d(DOC)
    file_ref["components"]["schemas"]["Local"] = {"$ref": "file:///etc/hostname"}
    relative = d(DOC)
    relative["components"]["schemas"]["Rel"] = {"$ref": "other.json#/Pet"}
    return {
        "schema": (schema_ref, "/openApiSpec/components/schemas/Remote/$ref"),
        "path-item": (path_ref, "/openApiSpec/paths/~1remote/$ref"),
        "dynamicRef": (dynamic, "/openApiSpec/components/schemas/Pet/properties/tag/$dynamicRef"),
        "in-default": (in_default, "/openApiSpec/components/schemas/Pet/default/$ref"),
        "file": (file_ref, "/openApiSpec/components/schemas/Local/$ref"),
        "relative": (relative, "/openApiSpec/components/schemas/Rel/$ref"),
    }


@pytest.mark.parametrize("case", ["schema", "path-item", "dynamicRef", "in-default", "file", "relative"])
def test_remote_ref_refused_and_not_fetched(server: tuple[str, list[str]], case: str) -> None:
    base, hits = server
    doc, pointer = remote_ref_docs(base)[case]
    outcome = validate_openapi(spec_with(doc), SETTINGS)
    assert [(i.code, i.pointer) for i in outcome.errors] == [("remote_ref", pointer)]
    assert "never fetched" in outcome.errors[0].message
    assert hits == []


@pytest.mark.parametrize("case", ["schema", "path-item", "dynamicRef", "file"])
def test_validator_itself_cannot_fetch(server: tuple[str, list[str]], case: str) -> None:
    # Second line of defence: even if the pre-scan missed a reference, the validator's
    # resolver handlers refuse every URI instead of falling back to urllib.
    base, hits = server
    doc, _ = remote_ref_docs(base)[case]
    issues = _library_issues(doc)
    assert [i.code for i in issues] == ["openapi_semantic"]
    assert "Unresolvable" in issues[0].message
    assert "fetched" not in issues[0].message
    assert hits == []


# --- references: cycles and dangling refs -------------------------------------------------


def test_self_recursive_schema_is_legal(doc: dict[str, Any]) -> None:
    doc["components"]["schemas"]["Node"] = {
        "type": "object",
        "properties": {
            "next": {"$ref": "#/components/schemas/Node"},
            "kids": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
        },
        "default": {"next": {"next": {}}},
    }
    assert run(doc) == []


@pytest.mark.parametrize(
    "schemas",
    [
        {"A": {"$ref": "#/components/schemas/B"}, "B": {"$ref": "#/components/schemas/A"}},
        {"A": {"$ref": "#/components/schemas/A"}},
        {"A": {"$ref": "#/components/schemas/A/properties/x"}},
        {
            "A": {"$ref": "#/components/schemas/B"},
            "B": {"$ref": "#/components/schemas/C"},
            "C": {"$ref": "#/components/schemas/A"},
        },
    ],
    ids=["a-b-a", "self-alias", "through-itself", "a-b-c-a"],
)
def test_alias_cycle_is_reported_quickly(doc: dict[str, Any], schemas: dict[str, Any]) -> None:
    doc["components"]["schemas"].update(schemas)
    t0 = time.perf_counter()
    found = run(doc)
    assert time.perf_counter() - t0 < 1.0
    assert found
    assert {code for code, _ in found} == {"ref_cycle"}
    assert all(p.startswith("/openApiSpec/components/schemas/") for _, p in found)


def test_response_alias_cycle(doc: dict[str, Any]) -> None:
    doc["components"]["responses"]["R"] = {"$ref": "#/components/responses/R"}
    doc["paths"]["/pets"]["post"]["responses"]["201"] = {"$ref": "#/components/responses/R"}
    assert {code for code, _ in run(doc)} == {"ref_cycle"}


def test_overlong_alias_chain_is_reported(doc: dict[str, Any]) -> None:
    chain = {f"S{n}": {"$ref": f"#/components/schemas/S{n + 1}"} for n in range(200)}
    chain["S200"] = {"type": "string"}
    doc["components"]["schemas"].update(chain)
    t0 = time.perf_counter()
    found = run(doc)
    assert time.perf_counter() - t0 < 2.0
    assert found
    assert {code for code, _ in found} == {"ref_depth"}
    # the tail of the chain is short enough and not reported
    assert ("ref_depth", "/openApiSpec/components/schemas/S190/$ref") not in found
    assert ("ref_depth", "/openApiSpec/components/schemas/S0/$ref") in found


def test_short_alias_chain_is_fine(doc: dict[str, Any]) -> None:
    doc["components"]["schemas"].update(
        {"A": {"$ref": "#/components/schemas/B"}, "B": {"$ref": "#/components/schemas/Pet"}}
    )
    assert run(doc) == []


def test_dangling_ref(doc: dict[str, Any]) -> None:
    doc["components"]["schemas"]["A"] = {"$ref": "#/components/schemas/Nope"}
    doc["paths"]["/pets"]["get"]["responses"]["200"] = {"$ref": "#/components/responses/OnePet/x"}
    assert sorted(run(doc)) == [
        ("unresolvable_ref", "/openApiSpec/components/schemas/A/$ref"),
        ("unresolvable_ref", "/openApiSpec/paths/~1pets/get/responses/200/$ref"),
    ]


def test_escaped_and_percent_encoded_refs_resolve(doc: dict[str, Any]) -> None:
    doc["components"]["schemas"]["X"] = {"$ref": "#/paths/~1pets~1%7Bid%7D/get/parameters/0/schema"}
    assert run(doc) == []
    doc["components"]["schemas"]["X"] = {"$ref": "#/paths/~1pets~1%7Bid%7D/get/parameters/1/schema"}
    assert run(doc) == [("unresolvable_ref", "/openApiSpec/components/schemas/X/$ref")]


def test_id_and_schema_keywords_do_not_fetch(server: tuple[str, list[str]], doc: dict[str, Any]) -> None:
    # $id rebases "#/..." refs inside it onto a remote URI, and $schema names a dialect
    # by URI: both are legal in 3.1 and neither may make the validator go out.
    base, hits = server
    doc["components"]["schemas"]["Rebased"] = {
        "$id": f"{base}/rebased.json",
        "type": "object",
        "properties": {"pet": {"$ref": "#/components/schemas/Pet"}},
        "default": {"pet": {"id": 1, "name": "x"}},
    }
    doc["components"]["schemas"]["Dialect"] = {"$schema": f"{base}/dialect.json", "type": "string"}
    outcome = validate_openapi(spec_with(doc), SETTINGS)
    assert hits == []
    assert any("Unknown JSON Schema dialect" in i.message for i in outcome.errors)


# --- reference fan-out ("billion laughs") ------------------------------------------------------------


def laughs(doc: dict[str, Any], levels: int, fan: int = 10) -> dict[str, Any]:
    schemas = doc["components"]["schemas"]
    for level in range(levels):
        schemas[f"L{level}"] = {"allOf": [{"$ref": f"#/components/schemas/L{level + 1}"}] * fan}
    schemas[f"L{levels}"] = {"type": "string"}
    doc["paths"]["/pets"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] = {
        "$ref": "#/components/schemas/L0"
    }
    return doc


def test_reference_fan_out_is_refused_before_the_validator(doc: dict[str, Any]) -> None:
    # Unchecked, the validator needed 4.5 s for 5 levels and hours for 8 (measured).
    started = time.perf_counter()
    outcome = validate_openapi(spec_with(laughs(doc, levels=30)), SETTINGS)
    assert time.perf_counter() - started < 2
    [issue] = outcome.errors
    assert (issue.code, issue.pointer) == ("ref_expansion", "/openApiSpec")
    assert "more than 100000 reference walks" in issue.message


def test_moderate_sharing_is_validated(doc: dict[str, Any]) -> None:
    assert run(laughs(doc, levels=3)) == []


def test_a_chain_of_schemas_is_fine_until_its_walks_add_up(doc: dict[str, Any]) -> None:
    def chain(length: int) -> dict[str, Any]:
        chained = copy.deepcopy(doc)
        schemas = chained["components"]["schemas"]
        for i in range(length):
            schemas[f"S{i}"] = {"allOf": [{"$ref": f"#/components/schemas/S{i + 1}"}]}
        schemas[f"S{length}"] = {"type": "string"}
        return chained

    assert run(chain(150)) == []  # about 11,000 walks
    # Each $ref is followed to the chain's end wherever it is used: 125,000 walks, which the
    # validator needed 29 s for (measured); refused in milliseconds instead.
    assert run(chain(500)) == [("ref_expansion", "/openApiSpec")]


def test_reference_issues_is_the_quick_synchronous_subset(doc: dict[str, Any]) -> None:
    assert reference_issues(spec_with(copy.deepcopy(doc)), SETTINGS) == []
    assert reference_issues(copy.deepcopy(EXAMPLE), SETTINGS) == []
    doc["components"]["schemas"]["Remote"] = {"$ref": "file:///etc/passwd"}
    started = time.perf_counter()
    fanned = reference_issues(spec_with(laughs(copy.deepcopy(doc), levels=30)), SETTINGS)
    assert time.perf_counter() - started < 1
    assert [(i.code, i.pointer) for i in fanned] == [("remote_ref", "/openApiSpec/components/schemas/Remote/$ref")]
    del doc["components"]["schemas"]["Remote"]
    assert [i.code for i in reference_issues(spec_with(laughs(doc, levels=30)), SETTINGS)] == ["ref_expansion"]
