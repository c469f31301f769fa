"""OpenAPI 3.1 validation (checks/openapi.py), as a pure function."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from typing import Any

import openapi_spec_validator
import pytest

from checks import openapi_structure
from checks.openapi import reference_issues, validate_openapi
from checks.openapi_refs import RefChecker
from checks.openapi_semantics import semantic_issues
from checks.openapi_structure import OAS_DIALECT, structural_issues
from core.domain import Outcome, Phase
from core.settings import LimitSettings, Settings
from tests.checks.test_spec_schema import EXAMPLE
from tests.support.loopback_http import LoopbackHTTPServer, Reply, Request, json_reply
from tests.support.openapi_docs import compact_size, openapi_document
from tests.support.provider import provider_openapi

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
    # Each finding points at its place (openapi-spec-validator's had no location: /openApiSpec).
    assert {(i.code, i.pointer) for i in outcome.errors} == {
        ("duplicate_operation_id", "/openApiSpec/paths/~1pets/post/operationId"),
        ("path_parameter", "/openApiSpec/paths/~1pets~1{id}/get"),
    }


def test_ref_to_the_wrong_kind_of_object_fails_cleanly(doc: dict[str, Any]) -> None:
    # Structurally valid, but the parameter it resolves to has no name (openapi-spec-validator
    # raised KeyError deep inside): a finding, not a crashed task.
    doc["paths"]["/pets/{id}"]["get"]["parameters"] = [{"$ref": "#/components/schemas/Pet"}]
    assert run(doc) == [
        ("parameter_ref", "/openApiSpec/paths/~1pets~1{id}/get/parameters/0"),
        ("path_parameter", "/openApiSpec/paths/~1pets~1{id}/get"),  # so 'id' is not declared either
    ]


def test_invalid_default_value_is_reported(doc: dict[str, Any]) -> None:
    doc["components"]["schemas"]["Pet"]["properties"]["id"]["default"] = "one"
    outcome = validate_openapi(spec_with(doc), SETTINGS)
    assert [(i.code, i.pointer) for i in outcome.errors] == [
        ("invalid_default", "/openApiSpec/components/schemas/Pet/properties/id/default")
    ]
    assert "does not match its schema" in outcome.errors[0].message
    assert '"one" is not of type "integer"' in outcome.errors[0].message


def test_path_limit_stops_before_validating(doc: dict[str, Any]) -> None:
    assert run(doc, Settings(limits=LimitSettings(max_openapi_paths=1))) == [("size", "/openApiSpec/paths")]


# --- references: never fetched -----------------------------------------------------------


@pytest.fixture
def server() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []

    def answer(request: Request) -> Reply:
        hits.append(request.path)
        return json_reply(200, {"type": "integer", "description": "fetched"})

    with LoopbackHTTPServer(answer, methods=("GET",)) as srv:
        yield srv.url, hits


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


@pytest.mark.parametrize("case", ["schema", "path-item", "dynamicRef", "in-default", "file"])
def test_later_passes_cannot_fetch_either(server: tuple[str, list[str]], case: str) -> None:
    # Second line of defence: even if the reference scan missed a reference, the structural and
    # semantic passes never load one (the jsonschema-rs retriever refuses every URI).
    base, hits = server
    doc, _ = remote_ref_docs(base)[case]
    issues = structural_issues(doc) + semantic_issues(doc, RefChecker(doc))
    assert hits == []
    assert not any("fetched" in i.message for i in issues)  # the recorder's body never shows up
    if case == "dynamicRef":  # the default's schema cannot be compiled without the remote schema
        assert [i.code for i in issues] == ["invalid_default"]
        assert "cannot be compiled to check its default (external references are never loaded)" in issues[0].message


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


# --- semantic checks ------------------------------------------------------------------------


def op(operation_id: str, **fields: Any) -> dict[str, Any]:
    return {"operationId": operation_id, "responses": {"200": {"description": "ok"}}, **fields}


def path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def test_valid_documents_have_no_findings(doc: dict[str, Any]) -> None:
    assert run(doc) == []
    assert run(provider_openapi("https://api.acme.example")) == []
    assert run(openapi_document(resources=3)) == []


def test_the_generated_document_is_valid_for_openapi_spec_validator_too() -> None:
    # The benchmark's document must be valid by the reference implementation, not only by ours.
    openapi_spec_validator.validate(openapi_document(resources=2))


def test_operation_ids_are_unique_across_paths_webhooks_and_callbacks(doc: dict[str, Any]) -> None:
    doc["webhooks"] = {"petAdded": {"post": op("getPet")}}
    callback = {"{$request.body#/url}": {"post": op("listPets")}}
    doc["paths"]["/pets"]["post"]["callbacks"] = {"onAdd": callback}
    assert sorted(run(doc)) == [
        (
            "duplicate_operation_id",
            "/openApiSpec/paths/~1pets/post/callbacks/onAdd/{$request.body#~1url}/post/operationId",
        ),
        ("duplicate_operation_id", "/openApiSpec/webhooks/petAdded/post/operationId"),
    ]


def test_path_parameters_declared_on_the_path_item_count(doc: dict[str, Any]) -> None:
    item = doc["paths"]["/pets/{id}"]
    item["parameters"] = [path_param("id")]
    item["get"]["parameters"] = []
    item["delete"] = op("deletePet")
    assert run(doc) == []
    doc["components"]["parameters"] = {"PetId": path_param("id")}
    item["parameters"] = [{"$ref": "#/components/parameters/PetId"}]  # through a reference as well
    assert run(doc) == []


def test_undeclared_path_parameter_is_reported_per_operation(doc: dict[str, Any]) -> None:
    doc["paths"]["/pets/{id}/toys/{toyId}"] = {"get": op("listToys", parameters=[path_param("id")]), "put": op("x")}
    found = run(doc)
    assert found == [
        ("path_parameter", "/openApiSpec/paths/~1pets~1{id}~1toys~1{toyId}/get"),
        ("path_parameter", "/openApiSpec/paths/~1pets~1{id}~1toys~1{toyId}/put"),
        ("path_parameter", "/openApiSpec/paths/~1pets~1{id}~1toys~1{toyId}/put"),
    ]
    messages = [i.message for i in validate_openapi(spec_with(doc), SETTINGS).errors]
    assert "Path parameter 'toyId' for 'get' operation in '/pets/{id}/toys/{toyId}' is not declared" in messages[0]


def test_path_parameter_missing_from_the_template_is_reported_where_declared(doc: dict[str, Any]) -> None:
    doc["paths"]["/pets"]["parameters"] = [path_param("shelter")]
    doc["paths"]["/pets/{id}"]["get"]["parameters"].append(path_param("name"))
    assert run(doc) == [
        ("path_parameter", "/openApiSpec/paths/~1pets/parameters/0"),
        ("path_parameter", "/openApiSpec/paths/~1pets~1{id}/get/parameters/1"),
    ]


def test_duplicate_parameters(doc: dict[str, Any]) -> None:
    params = doc["paths"]["/pets/{id}"]["get"]["parameters"]
    params.append({"name": "id", "in": "query", "schema": {"type": "string"}})  # other `in`: fine
    assert run(doc) == []
    params.append(copy.deepcopy(params[0]))
    outcome = validate_openapi(spec_with(doc), SETTINGS)
    assert [(i.code, i.pointer) for i in outcome.errors] == [
        ("duplicate_parameter", "/openApiSpec/paths/~1pets~1{id}/get/parameters/2")
    ]
    assert outcome.errors[0].message == "Duplicate parameter 'id' (in: path)"


def test_an_operation_parameter_may_override_its_path_items(doc: dict[str, Any]) -> None:
    doc["paths"]["/pets/{id}"]["parameters"] = [path_param("id")]
    assert run(doc) == []


@pytest.mark.parametrize(
    ("path", "code"),
    [("/pets/{id", "path_template"), ("/pets/id}", "path_template"), ("/pets/{}", "path_template")],
)
def test_malformed_path_templates(doc: dict[str, Any], path: str, code: str) -> None:
    doc["paths"][path] = {"get": op("other")}
    assert run(doc) == [(code, f"/openApiSpec/paths/{path.replace('/', '~1')}")]


def test_template_variable_named_twice(doc: dict[str, Any]) -> None:
    doc["paths"]["/a/{id}/b/{id}"] = {"get": op("other", parameters=[path_param("id")])}
    assert run(doc) == [("path_template", "/openApiSpec/paths/~1a~1{id}~1b~1{id}")]


def test_paths_differing_only_in_variable_names_conflict(doc: dict[str, Any]) -> None:
    doc["paths"]["/pets/{petId}"] = {"put": op("replacePet", parameters=[path_param("petId")])}
    outcome = validate_openapi(spec_with(doc), SETTINGS)
    assert [(i.code, i.pointer) for i in outcome.errors] == [("path_conflict", "/openApiSpec/paths/~1pets~1{petId}")]
    assert "same as '/pets/{id}'" in outcome.errors[0].message


@pytest.mark.parametrize("code", ["600", "20", "2XXX", "ok", "099"])
def test_invalid_response_codes(doc: dict[str, Any], code: str) -> None:
    doc["paths"]["/pets"]["post"]["responses"][code] = {"description": "?"}
    outcome = validate_openapi(spec_with(doc), SETTINGS)
    assert [(i.code, i.pointer) for i in outcome.errors] == [
        ("openapi_schema", f"/openApiSpec/paths/~1pets/post/responses/{code}")
    ]
    assert outcome.errors[0].message == f"'{code}' is not a response code: use 100-599, 1XX-5XX or default"


def test_valid_response_codes(doc: dict[str, Any]) -> None:
    doc["paths"]["/pets"]["post"]["responses"] |= {"4XX": {"description": "x"}, "default": {"description": "y"}}
    assert run(doc) == []


def test_a_path_must_start_with_a_slash(doc: dict[str, Any]) -> None:
    doc["paths"]["pets"] = {}
    assert run(doc) == [("openapi_schema", "/openApiSpec/paths/pets")]


def test_duplicate_tags(doc: dict[str, Any]) -> None:
    doc["tags"] = [{"name": "pets"}, {"name": "store"}, {"name": "pets"}]
    assert run(doc) == [("duplicate_tag", "/openApiSpec/tags/2/name")]


def test_every_schema_object_is_checked_against_the_dialect(doc: dict[str, Any]) -> None:
    # openapi-spec-validator checked only component schemas, parameters and response content.
    doc["paths"]["/pets"]["post"]["requestBody"] = {
        "content": {"application/json": {"schema": {"type": "object", "properties": {"n": {"type": "int"}}}}}
    }
    assert run(doc) == [
        (
            "openapi_schema",
            "/openApiSpec/paths/~1pets/post/requestBody/content/application~1json/schema/properties/n/type",
        )
    ]


def test_invalid_defaults_anywhere_with_their_pointer(doc: dict[str, Any]) -> None:
    doc["paths"]["/pets"]["get"]["parameters"] = [
        {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 100, "default": 500}}
    ]
    doc["paths"]["/pets"]["post"]["requestBody"] = {
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"pet": {"$ref": "#/components/schemas/Pet"}},
                    "default": {"pet": {"id": "seven", "name": "Rex"}},  # checked through the $ref
                }
            }
        }
    }
    assert sorted(run(doc)) == [
        ("invalid_default", "/openApiSpec/paths/~1pets/get/parameters/0/schema/default"),
        (
            "invalid_default",
            "/openApiSpec/paths/~1pets/post/requestBody/content/application~1json/schema/default/pet/id",
        ),
    ]


def test_valid_defaults_including_through_references(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    schemas["Tree"] = {
        "type": "object",
        "properties": {"kids": {"type": "array", "items": {"$ref": "#/components/schemas/Tree"}}},
        "default": {"kids": [{"kids": []}]},
    }
    schemas["Owner"] = {"allOf": [{"$ref": "#/components/schemas/Pet"}], "default": {"id": 1, "name": "x"}}
    schemas["When"] = {"type": "string", "format": "date-time", "default": "2026-01-01T00:00:00Z"}
    schemas["Link"] = {"type": "string", "format": "uri", "default": ""}  # URI formats were never asserted
    assert run(doc) == []
    schemas["When"]["default"] = "yesterday"
    assert run(doc) == [("invalid_default", "/openApiSpec/components/schemas/When/default")]


def test_patterns_must_be_regular_expressions(doc: dict[str, Any]) -> None:
    pet = doc["components"]["schemas"]["Pet"]
    pet["properties"]["name"]["pattern"] = r"^\p{L}+$"  # ECMA-262, fine
    pet["patternProperties"] = {"^x-[a-z]+$": {"type": "string"}}
    assert run(doc) == []
    pet["properties"]["name"]["pattern"] = "(unclosed"
    pet["patternProperties"]["[z-a]"] = {}
    assert sorted(run(doc)) == [
        ("schema_pattern", "/openApiSpec/components/schemas/Pet/patternProperties/[z-a]"),
        ("schema_pattern", "/openApiSpec/components/schemas/Pet/properties/name/pattern"),
    ]


def test_required_names_must_be_defined_with_all_of(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    schemas["NamedPet"] = {"allOf": [{"$ref": "#/components/schemas/Pet"}], "required": ["name", "tag"]}
    assert run(doc) == []
    schemas["NamedPet"]["required"].append("colour")
    outcome = validate_openapi(spec_with(doc), SETTINGS)
    assert [(i.code, i.pointer) for i in outcome.errors] == [
        ("schema_required", "/openApiSpec/components/schemas/NamedPet/required")
    ]
    assert "['colour']" in outcome.errors[0].message


@pytest.mark.parametrize("dialect", ["https://json-schema.org/draft/2020-12/schema", OAS_DIALECT])
def test_known_dialects_are_accepted(doc: dict[str, Any], dialect: str) -> None:
    doc["jsonSchemaDialect"] = dialect
    doc["components"]["schemas"]["Pet"]["$schema"] = dialect
    assert run(doc) == []


def test_unknown_dialect_is_reported_where_named(doc: dict[str, Any]) -> None:
    doc["components"]["schemas"]["Pet"]["$schema"] = "http://json-schema.org/draft-04/schema#"
    doc["jsonSchemaDialect"] = "https://example.com/dialect"
    outcome = validate_openapi(spec_with(doc), SETTINGS)
    assert [(i.code, i.pointer) for i in outcome.errors] == [
        ("schema_dialect", "/openApiSpec/components/schemas/Pet/$schema"),
        ("schema_dialect", "/openApiSpec/jsonSchemaDialect"),
    ]
    assert all("Unknown JSON Schema dialect" in i.message for i in outcome.errors)


def test_structural_messages_never_quote_a_whole_document_part(doc: dict[str, Any]) -> None:
    doc["paths"]["/pets"]["get"]["parameters"] = [{"name": "q", "in": "query", "schema": ["x" * 5000]}]
    outcome = validate_openapi(spec_with(doc), SETTINGS)
    assert outcome.errors
    assert all(len(i.message) < 400 for i in outcome.errors)
    assert len({(i.pointer, i.message) for i in outcome.errors}) == len(outcome.errors)  # no repeats


def test_a_one_megabyte_document_validates() -> None:
    document = openapi_document()
    assert compact_size(document) > 1024 * 1024
    outcome = validate_openapi(spec_with(document), SETTINGS)
    assert outcome.outcome is Outcome.PASSED, outcome.errors[:5]
    assert outcome.evidence["paths"] == 2 * 161
    assert outcome.evidence["operations"] == 6 * 161
    assert reference_issues(spec_with(document), SETTINGS) == []


def test_the_same_faults_are_found_in_a_large_document() -> None:
    document = openapi_document()
    document["paths"]["/v1/resource7s"]["post"]["operationId"] = "listResource7"
    del document["paths"]["/v1/resource9s/{resource9Id}"]["parameters"]
    document["components"]["schemas"]["Resource3"]["properties"]["priority"]["default"] = 11
    assert sorted(run(document)) == [
        ("duplicate_operation_id", "/openApiSpec/paths/~1v1~1resource7s/post/operationId"),
        ("invalid_default", "/openApiSpec/components/schemas/Resource3/properties/priority/default"),
        *[
            ("path_parameter", f"/openApiSpec/paths/~1v1~1resource9s~1{{resource9Id}}/{m}")
            for m in ("delete", "get", "patch", "put")
        ],
    ]


@pytest.mark.parametrize("extra", [{}, {"schema": {}, "content": {"text/plain": {}}}])
def test_a_parameter_needs_a_schema_or_content(doc: dict[str, Any], extra: dict[str, Any]) -> None:
    doc["paths"]["/pets"]["get"]["parameters"] = [{"name": "q", "in": "query", **extra}]
    outcome = validate_openapi(spec_with(doc), SETTINGS)
    assert [(i.code, i.pointer, i.message) for i in outcome.errors] == [
        (
            "openapi_schema",
            "/openApiSpec/paths/~1pets/get/parameters/0",
            "a parameter needs exactly one of schema and content",
        )
    ]


def test_extensions_are_not_read_as_what_they_sit_beside(doc: dict[str, Any]) -> None:
    odd = {"content": {"application/json": {"schema": {"type": "integer", "default": "not a number"}}}}
    doc["paths"]["/pets"]["get"]["responses"]["x-note"] = odd
    doc["paths"]["/pets"]["x-note"] = {"get": {"operationId": "listPets"}}
    doc["paths"]["x-note"] = {"get": {"operationId": "listPets"}}
    assert run(doc) == []


# --- compiled once, shared by threads -----------------------------------------------------------


def test_compiled_validators_are_reused_and_safe_across_threads(doc: dict[str, Any]) -> None:
    bad = copy.deepcopy(doc)
    bad["paths"]["/pets"]["post"]["operationId"] = "listPets"
    bad["components"]["schemas"]["Pet"]["properties"]["id"]["default"] = "one"
    bad["paths"]["/pets"]["get"]["responses"]["600"] = {"description": "?"}
    broken = copy.deepcopy(bad)
    del broken["paths"]["/pets"]["get"]["responses"]["600"]
    expected = {id(d): run(d) for d in (doc, bad, broken)}
    assert expected[id(bad)] == [("openapi_schema", "/openApiSpec/paths/~1pets/get/responses/600")]
    assert len(expected[id(broken)]) == 2
    validators: set[int] = set()
    failures: list[object] = []

    def worker(document: dict[str, Any]) -> None:
        for _ in range(15):
            validators.add(id(openapi_structure.validator()))
            found = run(document)
            if found != expected[id(document)]:
                failures.append(found)

    threads = [threading.Thread(target=worker, args=(d,)) for d in (doc, bad, broken) * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert validators == {id(openapi_structure.validator())}
