"""Shape check of submitted specs (checks/spec_schema.py)."""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

import pytest

from checks._once import built_once
from checks.spec_schema import Total, _validator, excerpt, json_pointer, load_schema, schema_errors, schema_report
from tests.support.specs import BASE_SPEC

EXAMPLE: dict[str, Any] = BASE_SPEC


@pytest.fixture
def spec() -> dict[str, Any]:
    return copy.deepcopy(EXAMPLE)


def test_valid_example_has_no_issues(spec: dict[str, Any]) -> None:
    assert schema_errors(spec) == []


def test_every_error_is_reported_with_its_pointer(spec: dict[str, Any]) -> None:
    del spec["endpoint"]["url"]
    spec["category"] = "poetry"
    spec["sla"]["maxLatencyMs"] = "fast"
    spec["colour"] = "blue"
    spec["pricing"]["rates"][1]["unit"] = "minute"

    found = {(i.code, i.pointer) for i in schema_errors(spec)}

    assert found == {
        ("additionalProperties", "/colour"),
        ("enum", "/category"),
        ("required", "/endpoint/url"),
        ("enum", "/pricing/rates/1/unit"),
        ("type", "/sla/maxLatencyMs"),
    }


def test_plans_and_access_approval_are_part_of_pricing(spec: dict[str, Any]) -> None:
    spec["pricing"]["accessApproval"] = True
    spec["pricing"]["plans"] = [
        {"name": "pro", "requestsPerMinute": 600, "tokensPerMonth": 10**9, "pricePerMonth": 49.5, "default": True}
    ]
    assert schema_errors(spec) == []
    spec["pricing"]["accessApproval"] = "yes"
    spec["pricing"]["plans"] = [{"name": "Pro Plan", "requestsPerMinute": 0, "burst": 5}, {"requestsPerMinute": 1}]
    found = {(i.code, i.pointer) for i in schema_errors(spec)}
    assert found == {
        ("type", "/pricing/accessApproval"),
        ("pattern", "/pricing/plans/0/name"),
        ("minimum", "/pricing/plans/0/requestsPerMinute"),
        ("additionalProperties", "/pricing/plans/0/burst"),
        ("required", "/pricing/plans/1/name"),
    }


def test_issues_are_sorted_by_location(spec: dict[str, Any]) -> None:
    spec["sla"]["availability"] = 101
    spec["category"] = "poetry"
    spec["pricing"]["rates"] = [{"unit": "request", "price": -1}] * 2 + [{"unit": "x", "price": 1}] * 9
    pointers = [i.pointer for i in schema_errors(spec)]
    # numeric order of array indexes: /rates/2 before /rates/10
    assert pointers == ["/category"] + ["/pricing/rates/0/price", "/pricing/rates/1/price"] + [
        f"/pricing/rates/{n}/unit" for n in range(2, 11)
    ] + ["/sla/availability"]


def test_each_missing_required_property_gets_its_own_pointer(spec: dict[str, Any]) -> None:
    del spec["provider"]
    del spec["name"]
    spec["sla"] = {}
    missing = sorted(i.pointer for i in schema_errors(spec) if i.code == "required")
    assert missing == ["/name", "/provider", "/sla/availability", "/sla/maxLatencyMs"]


def test_messages_are_kept(spec: dict[str, Any]) -> None:
    spec["compliance"]["level"] = "secret"
    (issue,) = schema_errors(spec)
    assert issue.code == "enum"
    assert "'secret' is not one of" in issue.message


@pytest.mark.parametrize("body", [None, [], "spec", 3])
def test_non_object_body_is_a_type_error(body: object) -> None:
    assert [(i.code, i.pointer) for i in schema_errors(body)] == [("type", "")]


def test_pointer_escapes_tilde_and_slash() -> None:
    assert json_pointer(["paths", "/users/{id}", "a~b", 0]) == "/paths/~1users~1{id}/a~0b/0"
    assert json_pointer([]) == ""


def test_additional_property_with_slash_is_escaped(spec: dict[str, Any]) -> None:
    spec["provider"]["a/b~c"] = 1
    assert [i.pointer for i in schema_errors(spec)] == ["/provider/a~1b~0c"]


def test_load_schema_returns_a_copy() -> None:
    schema = load_schema()
    assert schema["title"] == "ServiceSpec"
    schema["required"].clear()
    assert load_schema()["required"]


# --- hostile sizes -----------------------------------------------------------------------------


def test_an_oversized_array_is_reported_without_full_validation(spec: dict[str, Any]) -> None:
    spec["tags"] = [{"n": i} for i in range(50_000)]  # uniqueItems over objects is quadratic
    spec["compliance"]["dataResidency"] = ["US"] * 65

    started = time.perf_counter()
    issues = schema_errors(spec)

    assert time.perf_counter() - started < 1
    assert [(i.code, i.pointer, i.message) for i in issues] == [
        ("maxItems", "/tags", "an array of 50000 items is too long (at most 32)"),
        ("maxItems", "/compliance/dataResidency", "an array of 65 items is too long (at most 64)"),
    ]


@pytest.mark.parametrize(("field", "value"), [("description", "x" * 1_000_000), ("name", "n" * 1_000_000)])
def test_messages_quote_only_an_excerpt_of_a_huge_value(spec: dict[str, Any], field: str, value: str) -> None:
    spec[field] = value
    [issue] = schema_errors(spec)
    assert issue.pointer == f"/{field}"
    assert "(1000000 characters)" in issue.message
    assert len(issue.message) < 300


def test_excerpt_quotes_short_values_whole_and_long_ones_in_part() -> None:
    assert excerpt("https://example.com/dialect") == "'https://example.com/dialect'"
    assert excerpt("x" * 500) == f"{'x' * 40!r}... (500 characters)"
    assert excerpt({str(i): i for i in range(100)}) == "an object of 100 members"


def test_at_most_a_hundred_issues_are_listed_with_the_total(spec: dict[str, Any]) -> None:
    spec["provider"] |= {f"extra{i}": i for i in range(1000)}
    issues = schema_errors(spec)
    assert len(issues) == 101
    assert (issues[-1].code, issues[-1].message) == ("too_many_errors", "1000 errors in all; the first 100 are listed")
    listed, total = schema_report(spec)
    assert (len(listed), total.count, total.exact) == (100, 1000, True)
    assert listed == issues[:100]


def test_a_list_that_is_not_cut_has_no_total_finding(spec: dict[str, Any]) -> None:
    spec["provider"] |= {f"extra{i}": i for i in range(100)}
    issues = schema_errors(spec)
    assert len(issues) == 100
    assert {i.code for i in issues} == {"additionalProperties"}
    assert schema_report(spec)[1] == Total(100)


# --- built once, shared by threads -------------------------------------------------------------


def test_the_validator_is_built_once_and_shared_by_threads(spec: dict[str, Any]) -> None:
    bad = copy.deepcopy(spec)
    bad["category"] = "poetry"
    validators: set[int] = set()
    failures: list[object] = []

    def worker(body: dict[str, Any], expected: list[tuple[str, str]]) -> None:
        for _ in range(25):
            validators.add(id(_validator()))
            found = [(i.code, i.pointer) for i in schema_errors(body)]
            if found != expected:
                failures.append(found)

    threads = [threading.Thread(target=worker, args=a) for a in [(spec, []), (bad, [("enum", "/category")])] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert validators == {id(_validator())}


def test_built_once_builds_once_when_threads_ask_at_the_same_time() -> None:
    calls: list[str] = []
    gate = threading.Barrier(8)

    @built_once
    def build(key: str) -> object:
        calls.append(key)
        time.sleep(0.05)  # long enough for every thread to miss the cache
        return object()

    results: list[object] = []

    def worker() -> None:
        gate.wait()
        results.append(build("a"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["a"]
    assert len({id(r) for r in results}) == 1
    assert build("b") is not build("a")
    assert calls == ["a", "b"]
    with pytest.raises(TypeError, match="positional"):
        build(key="a")
