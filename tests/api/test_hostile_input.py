"""Hostile request bodies over HTTP (in-process app), on SQLite and PostgreSQL.

Every bad input gets a 4xx in the one error shape, with a message and a JSON pointer, in bounded
time, and stores nothing. Injection strings are data: stored and returned verbatim, never run.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from checks.openapi import validate_openapi
from core.settings import Settings
from storage.database import session_scope
from storage.repositories import services
from storage.search import document_from_service, get_search_index
from tests.support.app import reconfigure
from tests.support.auth import provider
from tests.support.loopback_http import LoopbackHTTPServer, Reply, Request
from tests.support.specs import make_spec

SERVICES = "/api/v1/services"
SEARCH = "/api/v1/services/search"
JSON_TYPE = {"content-type": "application/json"}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Acme chat", "version": "1.0.0"},
    "paths": {
        "/health": {
            "get": {
                "responses": {
                    "200": {
                        "description": "Up",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}},
                    }
                }
            }
        }
    },
    "components": {"schemas": {"Health": {"type": "object"}}},
}


# --- helpers -----------------------------------------------------------------------------------------


def total(client: TestClient) -> int:
    """How many services acme sees (its own, whatever their status)."""
    response = client.get(SERVICES, headers=provider())
    assert response.status_code == 200, response.text
    return int(response.json()["total"])


def post_raw(client: TestClient, raw: bytes, content_type: str = "application/json") -> Any:
    return client.post(SERVICES, content=raw, headers={**provider(), "content-type": content_type})


def refused(response: Any, status: int, pointer: str | None = None) -> dict[str, Any]:
    """Assert the one error shape with a message (and the pointer, when given); returns the error."""
    assert response.status_code == status, response.text[:2000]
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] and error["message"]
    assert len(response.content) < 20_000, "an error must not echo the input back"
    if pointer is not None:
        assert pointer in [d["pointer"] for d in error["details"]], error
    return error


def with_openapi(doc: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return make_spec(openApiSpec=doc, **overrides)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture
def counting_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback server that records every request it gets (none are expected)."""
    seen: list[str] = []

    def answer(request: Request) -> Reply:
        seen.append(request.path)
        return Reply(200, b'{"type": "object"}')

    with LoopbackHTTPServer(answer, methods=("GET",)) as server:
        yield server.url, seen


# --- structure and size --------------------------------------------------------------------------------


def test_nesting_10000_deep_gets_422_with_the_pointer(client: TestClient) -> None:
    before = total(client)
    raw = json.dumps(make_spec()).encode()[:-1] + b', "openApiSpec": {"x": ' + nested(10_000).encode() + b"}}"

    started = time.perf_counter()
    error = refused(post_raw(client, raw), 422)

    assert time.perf_counter() - started < 5
    assert error["message"] == "request body is nested too deeply"
    [detail] = error["details"]
    assert detail["pointer"].startswith("/openApiSpec/x/0/0/")
    assert detail["pointer"].count("/") == 64  # the first container below the 64 levels allowed
    assert total(client) == before


def test_nesting_within_the_limit_is_accepted(client: TestClient) -> None:
    doc = copy.deepcopy(OPENAPI) | {"x-deep": json.loads(nested(50))}
    response = client.post(SERVICES, json=with_openapi(doc), headers=provider())
    assert response.status_code == 202, response.text


def test_a_5mb_string_gets_413_under_the_body_limit(client: TestClient) -> None:
    before = total(client)
    error = refused(client.post(SERVICES, json=make_spec(description="x" * 5_000_000), headers=provider()), 413)
    assert error["code"] == "payload_too_large"
    assert total(client) == before


def test_a_5mb_string_within_the_body_limit_gets_422_at_its_field(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKETPLACE_LIMITS__MAX_BODY_BYTES", str(8 * 1024 * 1024))
    reconfigure(client)  # also forgets the cached settings
    before = total(client)

    started = time.perf_counter()
    response = client.post(SERVICES, json=make_spec(description="x" * 5_000_000), headers=provider())

    error = refused(response, 422, "/description")
    assert time.perf_counter() - started < 10
    assert "(5000000 characters) is too long" in error["details"][0]["message"]
    assert total(client) == before


def test_huge_arrays_get_422_quickly_and_briefly(client: TestClient) -> None:
    before = total(client)
    tags = [{"a": i} for i in range(20_000)]  # uniqueItems over objects would be quadratic

    started = time.perf_counter()
    error = refused(client.post(SERVICES, json=make_spec(tags=tags), headers=provider()), 422, "/tags")

    assert time.perf_counter() - started < 5
    assert error["details"] == [
        {"pointer": "/tags", "message": "an array of 20000 items is too long (at most 32)", "code": "maxItems"}
    ]
    assert total(client) == before


def test_thousands_of_unknown_members_list_at_most_a_hundred_errors(client: TestClient) -> None:
    spec = make_spec()
    spec["provider"] |= {f"x{i}": i for i in range(5000)}
    error = refused(client.post(SERVICES, json=spec, headers=provider()), 422, "/provider/x0")
    assert (len(error["details"]), error["total"]) == (100, 5000)
    assert error["message"] == "the service spec has 5000 error(s); the first 100 are listed"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "9" * 5000])
def test_numbers_that_are_not_json_or_out_of_range_get_422(client: TestClient, literal: str) -> None:
    before = total(client)
    raw = json.dumps(make_spec()).replace('"availability": 99.9', f'"availability": {literal}').encode()
    error = refused(post_raw(client, raw), 422)
    assert error["message"] == "request body holds a number out of range"
    assert total(client) == before


# --- encodings and characters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [b"\xff", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf8\x88\x80\x80\x80"],
    ids=["stray-byte", "overlong-slash", "overlong-3-byte", "encoded-surrogate", "truncated", "5-byte-form"],
)
def test_invalid_and_overlong_utf8_gets_a_clear_4xx(client: TestClient, bad: bytes) -> None:
    before = total(client)
    raw = json.dumps(make_spec(description="DESC")).encode().replace(b"DESC", b"ab" + bad + b"cd")

    error = refused(post_raw(client, raw), 422)

    assert error["message"] == "request body is not UTF-8"
    offset = raw.index(bad)
    assert f"at offset {offset}" in error["details"][0]["message"]
    assert total(client) == before


@pytest.mark.parametrize(
    ("escape", "where", "pointer"),
    [
        ("\\ud800", "description", "/description"),
        ("\\udfff", "tag", "/tags/1"),
        ("\\u0000", "description", "/description"),
        ("\\u0000", "tag", "/tags/1"),
        ("\\ud83d", "openapi-key", "/openApiSpec/paths/~1a\\ud83d"),
        ("\\u0000", "openapi-value", "/openApiSpec/info/title"),
    ],
)
def test_lone_surrogates_and_nul_get_422_with_the_pointer(
    client: TestClient, escape: str, where: str, pointer: str
) -> None:
    before = total(client)
    doc = copy.deepcopy(OPENAPI)
    doc["paths"]["/aMARK"] = {}
    doc["info"]["title"] = "Acme MARK"
    spec = with_openapi(doc, description="before MARK after", tags=["chat", "tagMARK"])
    # Marks are swapped for the raw escape text: json.dumps would refuse to build these strings.
    raw = json.dumps(spec)
    if where == "description":
        raw = raw.replace("before MARK after", f"before {escape} after")
    elif where == "tag":
        raw = raw.replace("tagMARK", f"tag{escape}")
    elif where == "openapi-key":
        raw = raw.replace("/aMARK", f"/a{escape}")
    else:
        raw = raw.replace("Acme MARK", f"Acme {escape}")

    error = refused(post_raw(client, raw.encode()), 422, pointer)

    assert "NUL" in error["message"] or "unpaired surrogate" in error["message"]
    assert total(client) == before


def test_a_surrogate_pair_is_ordinary_text(client: TestClient) -> None:
    raw = json.dumps(make_spec(description="smile DESC")).replace("DESC", "\\ud83d\\ude00").encode()
    response = post_raw(client, raw)
    assert response.status_code == 202, response.text
    stored = client.get(f"{SERVICES}/{response.json()['serviceId']}", headers=provider()).json()
    assert stored["description"] == "smile \U0001f600"


def test_search_text_with_nul_gets_422(client: TestClient) -> None:
    response = client.post(SEARCH, content=b'{"query": "chat\\u0000"}', headers=JSON_TYPE)
    refused(response, 422, "/query")


# --- media types ---------------------------------------------------------------------------------------

YAML_BOMB = b"""\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


@pytest.mark.parametrize("content_type", ["application/yaml", "application/x-yaml", "text/yaml", "text/plain"])
def test_yaml_is_never_parsed_415(client: TestClient, content_type: str) -> None:
    before = total(client)
    started = time.perf_counter()
    error = refused(post_raw(client, YAML_BOMB, content_type), 415)
    assert time.perf_counter() - started < 2
    assert error["code"] == "unsupported_media_type"
    assert "application/json" in error["message"]
    assert total(client) == before


def test_json_in_another_charset_is_refused_415(client: TestClient) -> None:
    raw = json.dumps(make_spec()).encode()
    refused(post_raw(client, raw, "application/json; charset=iso-8859-1"), 415)
    assert post_raw(client, raw, "application/json; charset=UTF-8").status_code == 202


# --- the OpenAPI document --------------------------------------------------------------------------------


def test_ref_cycles_never_hang_or_500(client: TestClient) -> None:
    doc = copy.deepcopy(OPENAPI)
    doc["components"]["schemas"] |= {
        "A": {"$ref": "#/components/schemas/B"},
        "B": {"$ref": "#/components/schemas/A"},
        "Tree": {
            "type": "object",
            "properties": {"children": {"type": "array", "items": {"$ref": "#/components/schemas/Tree"}}},
        },
        "Self": {"$ref": "#/components/schemas/Self"},
    }
    spec = with_openapi(doc)

    started = time.perf_counter()
    response = client.post(SERVICES, json=spec, headers=provider())
    outcome = validate_openapi(spec, Settings())  # what the publish run's phase 3 finds

    assert time.perf_counter() - started < 10
    assert response.status_code == 422, "refused before anything is stored"
    assert {d["code"] for d in response.json()["error"]["details"]} == {"ref_cycle"}
    cycles = {(e.code, e.pointer) for e in outcome.errors}
    assert ("ref_cycle", "/openApiSpec/components/schemas/A/$ref") in cycles
    assert ("ref_cycle", "/openApiSpec/components/schemas/Self/$ref") in cycles
    assert not any("Tree" in pointer for _, pointer in cycles)  # recursion through a property is legal


def test_remote_and_file_refs_are_never_fetched(client: TestClient, counting_server: tuple[str, list[str]]) -> None:
    base, seen = counting_server
    doc = copy.deepcopy(OPENAPI)
    doc["components"]["schemas"] |= {
        "Remote": {"$ref": f"{base}/x.json"},
        "Passwd": {"$ref": "file:///etc/passwd"},
        "Dynamic": {"$dynamicRef": f"{base}/dyn.json#meta"},
    }
    doc["paths"]["/health"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] = {
        "$ref": f"{base}/x.json"
    }
    spec = with_openapi(doc)

    response = client.post(SERVICES, json=spec, headers=provider())
    outcome = validate_openapi(spec, Settings())

    assert response.status_code == 422, "refused before anything is stored"
    assert "/openApiSpec/components/schemas/Remote/$ref" in {d["pointer"] for d in response.json()["error"]["details"]}
    assert seen == []
    remote = {e.pointer for e in outcome.errors if e.code == "remote_ref"}
    assert {
        "/openApiSpec/components/schemas/Remote/$ref",
        "/openApiSpec/components/schemas/Passwd/$ref",
        "/openApiSpec/components/schemas/Dynamic/$dynamicRef",
    } <= remote
    assert not any("root:" in e.message for e in outcome.errors)  # /etc/passwd never read into a message


def test_reference_fan_out_billion_laughs_is_refused_in_bounded_time(client: TestClient) -> None:
    doc = copy.deepcopy(OPENAPI)
    schemas = doc["components"]["schemas"]
    for level in range(30):  # 10^30 walks for a validator that follows every reference where it is used
        schemas[f"L{level}"] = {"allOf": [{"$ref": f"#/components/schemas/L{level + 1}"}] * 10}
    schemas["L30"] = {"type": "string"}
    doc["paths"]["/health"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] = {
        "$ref": "#/components/schemas/L0"
    }
    spec = with_openapi(doc)

    started = time.perf_counter()
    response = client.post(SERVICES, json=spec, headers=provider())
    outcome = validate_openapi(spec, Settings())

    assert time.perf_counter() - started < 5
    assert response.status_code == 422, "refused before anything is stored"
    assert [(e.code, e.pointer) for e in outcome.errors] == [("ref_expansion", "/openApiSpec")]


def test_a_large_flat_array_in_the_openapi_document_is_fine(client: TestClient) -> None:
    doc = copy.deepcopy(OPENAPI) | {"x-samples": [0] * 100_000}
    started = time.perf_counter()
    response = client.post(SERVICES, json=with_openapi(doc), headers=provider())
    assert response.status_code == 202, response.text
    assert time.perf_counter() - started < 10


# --- injection strings are data ----------------------------------------------------------------------------

SQL = "'; DROP TABLE services; --"
SCRIPT = "<script>alert(1)</script>"
ODD = [
    SQL,
    SCRIPT,
    "Robert'); DELETE FROM audit_log WHERE ('1'='1",
    '" OR ""="',
    "\\'; SELECT pg_sleep(10); --",
    "%' OR 1=1 --",
    "<img src=x onerror=alert(1)>",
    "{{7*7}} ${7*7} #{7*7}",
    "\u202eevil\u202c \U0001f600 ä\u0301",
    "line1\nline2\ttab\r\n",
]


def test_injection_strings_are_stored_and_returned_verbatim(client: TestClient) -> None:
    description = " | ".join(ODD)
    spec = make_spec(
        name="acme-inject",
        description=description,
        tags=[SQL, SCRIPT, "\u202eevil\u202c"],
        capabilities=[{"name": SCRIPT, "description": SQL}],
    )
    spec["provider"]["name"] = SQL + SCRIPT

    response = client.post(SERVICES, json=spec, headers=provider())
    assert response.status_code == 202, response.text
    service_id = response.json()["serviceId"]

    read = client.get(f"{SERVICES}/{service_id}", headers=provider())
    assert read.status_code == 200
    assert read.headers["content-type"].startswith("application/json")
    got = read.json()
    assert got["description"] == description
    assert got["tags"] == [SQL, SCRIPT, "\u202eevil\u202c"]
    assert got["providerName"] == SQL + SCRIPT
    assert got["spec"] == spec  # the whole spec, every string byte for byte

    # Search: make it listed as a publication would, then find it by injection text.
    with session_scope() as session:
        service = services.get(session, service_id)
        service.status, service.published_at = "active", datetime(2026, 1, 1, tzinfo=UTC)
        session.flush()
        document = document_from_service(service)
    get_search_index().index(document)
    for query in (SQL, SCRIPT, "DROP TABLE services", "alert"):
        found = client.post(SEARCH, json={"query": query})
        assert found.status_code == 200, (query, found.text)
    hits = client.post(SEARCH, json={"query": "DROP TABLE services"}).json()["items"]
    [hit] = [h for h in hits if h["serviceId"] == service_id]
    assert (hit["description"], hit["tags"]) == (description, [SQL, SCRIPT, "\u202eevil\u202c"])
    by_tag = client.post(SEARCH, json={"filters": {"tags": [SQL]}}).json()["items"]
    assert [h["serviceId"] for h in by_tag] == [service_id]

    with session_scope() as session:  # nothing was executed: the table is there, with the row
        assert session.execute(text("SELECT count(*) FROM services")).scalar_one() >= 1


@pytest.mark.parametrize("name", [SQL, SCRIPT, "a" * 5000])
def test_injection_in_the_name_is_refused_by_its_pattern(client: TestClient, name: str) -> None:
    before = total(client)
    error = refused(client.post(SERVICES, json=make_spec(name=name), headers=provider()), 422, "/name")
    assert len(error["details"][0]["message"]) < 500
    assert total(client) == before
    with session_scope() as session:
        assert session.execute(text("SELECT count(*) FROM services")).scalar_one() == before


def test_a_refused_update_loses_nothing(client: TestClient) -> None:
    response = client.post(SERVICES, json=make_spec(name="acme-keep", description=SQL), headers=provider())
    service_id = response.json()["serviceId"]
    for raw in (b'{"description": "x\\u0000"}', b'{"tags": ' + nested(200).encode() + b"}", b"\xff"):
        update = client.put(f"{SERVICES}/{service_id}", content=raw, headers={**provider(), **JSON_TYPE})
        assert update.status_code == 422, update.text
    assert client.get(f"{SERVICES}/{service_id}", headers=provider()).json()["description"] == SQL
