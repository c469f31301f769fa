"""POST /api/v1/services/search over HTTP (in-process app), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from storage.database import session_scope
from storage.repositories import services
from storage.repositories.services import Actor
from storage.search import document_from_service, get_search_index
from storage.search import sql as sql_backend
from tests.support.specs import make_spec

SEARCH = "/api/v1/services/search"


def listed(name: str, *, status: str = "active", days: int = 0, **spec: Any) -> str:
    with session_scope() as session:
        service = services.create_submitted(session, make_spec(name=name, **spec), Actor("acme", "provider"))
        service.status = status
        service.published_at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=days)
        session.flush()
        document = document_from_service(service)
    get_search_index().index(document)
    return service.id


def test_search_answers_the_list_envelope_with_facets(client: TestClient) -> None:
    chat = listed("acme-chat", description="Chat with customers", tags=["eu", "fast"], days=1)
    listed("acme-embed", description="Embeddings for chat search", category="embeddings", tags=["eu"])
    listed("acme-old", description="Chat of old", status="deprecated")
    listed("acme-draft", description="Chat draft", status="testing")
    body = {
        "query": "chatting",
        "filters": {"tags": ["eu"]},
        "includeDeprecated": False,
        "pagination": {"offset": 0, "limit": 1},
        "sort": "relevance",
    }
    response = client.post(SEARCH, json=body)  # no Authorization header: search is public
    assert response.status_code == 200, response.text
    result = response.json()
    assert set(result) == {
        *("items", "total", "totalApproximate", "offset", "limit", "facets", "rankingApproximate", "ranked")
    }
    assert (result["totalApproximate"], result["rankingApproximate"], result["ranked"]) == (False, False, None)
    assert result["total"] == 2
    assert (result["offset"], result["limit"]) == (0, 1)
    [hit] = result["items"]
    assert hit["serviceId"] == chat
    assert set(hit) == {
        "serviceId",
        "name",
        "version",
        "description",
        "category",
        "tags",
        "pricingModel",
        "complianceLevel",
        "providerId",
        "status",
        "publishedAt",
        "score",
        "calls30d",
        "availability",
        "latencyP50Ms",
        "latencyP95Ms",
    }
    assert (hit["name"], hit["pricingModel"], hit["complianceLevel"], hit["status"]) == (
        "acme-chat",
        "per-token",
        "public",
        "active",
    )
    assert hit["publishedAt"].startswith("2026-01-02")
    assert isinstance(hit["score"], float)
    assert result["facets"] == {
        "category": [{"value": "chat", "count": 1}, {"value": "embeddings", "count": 1}],
        "pricingModel": [{"value": "per-token", "count": 2}],
        "complianceLevel": [{"value": "public", "count": 2}],
        "tags": [{"value": "eu", "count": 2}, {"value": "fast", "count": 1}],
        "popularity": [{"value": "0", "count": 2}],  # nothing recorded yet: no calls, nothing observed
        "availability": [{"value": "unknown", "count": 2}],
        "latency": [{"value": "unknown", "count": 2}],
        "approximate": False,
        "sampled": None,
    }
    assert (hit["calls30d"], hit["availability"], hit["latencyP50Ms"], hit["latencyP95Ms"]) == (0, None, None, None)


def test_a_ranking_over_part_of_the_matches_says_so(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(3):
        listed(f"acme-ranked-{n}", description="Chat with customers", days=n)
    monkeypatch.setattr(sql_backend, "RANK_WINDOW", 2)
    monkeypatch.setattr(sql_backend, "WINDOWED_DIALECTS", {"postgresql", "sqlite"})
    result = client.post(SEARCH, json={"query": "chat"}).json()
    assert (result["rankingApproximate"], result["ranked"], result["total"]) == (True, 2, 3)
    # The two newest ranked, then the rest newest first.
    assert [hit["name"] for hit in result["items"]] == ["acme-ranked-2", "acme-ranked-1", "acme-ranked-0"]


def test_an_empty_body_lists_everything_listed_newest_first(client: TestClient) -> None:
    listed("first", days=0)
    listed("second", days=1)
    listed("gone", status="deprecated", days=2)
    response = client.post(SEARCH, json={})
    assert response.status_code == 200, response.text
    result = response.json()
    assert [hit["name"] for hit in result["items"]] == ["second", "first"]
    assert (result["offset"], result["limit"]) == (0, 20)
    everything = client.post(SEARCH, json={"includeDeprecated": True, "sort": "name"}).json()
    assert [hit["name"] for hit in everything["items"]] == ["first", "gone", "second"]
    by_provider = client.post(SEARCH, json={"filters": {"provider": "acme", "pricingModel": "free"}}).json()
    assert by_provider["total"] == 0


@pytest.mark.parametrize(
    ("body", "pointers"),
    [
        ({"pagination": {"limit": 500}}, {"/pagination/limit"}),
        ({"pagination": {"offset": -1, "limit": "20"}}, {"/pagination/offset", "/pagination/limit"}),
        ({"pagination": {"offset": 9999}}, {"/pagination/offset"}),
        ({"sort": "popular"}, {"/sort"}),
        ({"query": ["chat"], "includeDeprecated": "yes"}, {"/query", "/includeDeprecated"}),
        ({"filters": {"tags": "eu", "pricing_model": "free"}}, {"/filters/tags", "/filters/pricing_model"}),
        ({"filters": {"category": "x" * 65}}, {"/filters/category"}),
        ({"query": "x" * 513}, {"/query"}),
        ({"unknown": 1}, {"/unknown"}),
    ],
)
def test_bad_bodies_get_422_with_pointers(client: TestClient, body: dict[str, Any], pointers: set[str]) -> None:
    response = client.post(SEARCH, json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_failed"
    assert {d["pointer"] for d in error["details"]} == pointers
    assert all(d["message"] for d in error["details"])


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"chat"'])
def test_a_body_that_is_not_a_json_object_is_422(client: TestClient, raw: bytes) -> None:
    response = client.post(SEARCH, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_failed"


def test_search_is_not_shadowed_by_service_routes_and_is_documented(client: TestClient) -> None:
    wrong_method = client.get("/api/v1/services/search")  # not GET /services/{id} for a service "search"
    assert (wrong_method.status_code, wrong_method.headers["Allow"]) == (405, "POST")
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/api/v1/services/search"]["post"]
    request = operation["requestBody"]["content"]["application/json"]["schema"]
    assert set(request["properties"]) == {"query", "filters", "includeDeprecated", "pagination", "sort"}
    assert request["properties"]["pagination"]["properties"]["limit"]["maximum"] == 100
    assert "security" not in operation


def test_a_change_is_visible_in_the_next_search_despite_the_cache(client) -> None:
    from storage.database import session_scope
    from storage.repositories import services
    from storage.repositories.services import Actor
    from storage.search import document_from_service, get_search_index
    from tests.support.specs import make_spec

    with session_scope() as session:
        service = services.create_submitted(session, make_spec(name="cached-chat"), Actor("acme"))
        service.status = "active"
        service_id = service.id
    with session_scope() as session:
        document = document_from_service(services.get(session, service_id))
    get_search_index().index(document)  # its own session: SQLite allows one writer at a time
    body = {"query": "cached"}
    assert client.post("/api/v1/services/search", json=body).json()["total"] == 1
    assert client.post("/api/v1/services/search", json=body).json()["total"] == 1  # served from the cache
    with session_scope() as session:
        services.get(session, service_id).status = "retired"
    get_search_index().remove(service_id)
    assert client.post("/api/v1/services/search", json=body).json()["total"] == 0


def test_identical_searches_missing_the_cache_together_run_once(client: TestClient) -> None:
    """Many clients asking the same broad question right after a change share one search."""
    from api.routes import search as route
    from storage.cache import get_cache
    from storage.search import SearchQuery

    listed("shared-chat")
    real = get_search_index()
    calls: list[str] = []
    gate = threading.Event()

    class Counting:
        def search(self, query: SearchQuery) -> Any:
            calls.append(query.text)
            gate.wait(5)  # hold the first search until every client has asked
            return real.search(query)

    query, cache, index = SearchQuery(text="shared"), get_cache(), Counting()
    with ThreadPoolExecutor(8) as pool:
        pages = [pool.submit(route.run_search, query, cache, index) for _ in range(8)]
        time.sleep(0.5)
        gate.set()
        totals = [json.loads(page.result(timeout=10))["total"] for page in pages]
    assert totals == [1] * 8
    assert calls == ["shared"]
    # Once done, nothing is left waiting: the next identical search is a cache hit, no new run.
    assert json.loads(route.run_search(query, cache, index))["total"] == 1
    assert calls == ["shared"] and route._in_flight == {}


def test_an_expired_answer_is_sent_at_once_and_refreshed_behind_it(client: TestClient) -> None:
    """Past its TTL, with nothing changed, the kept answer is still sent without waiting; one
    background search refreshes it, and later requests get the new answer without searching."""
    from api.routes import search as route
    from core.settings import CacheSettings
    from storage.cache import LocalBackend, ReadCache
    from storage.engine import read_change_stamp
    from storage.search import SearchPage, SearchQuery

    listed("expiring-chat")
    real = get_search_index()
    calls: list[float] = []
    release = threading.Event()

    class Numbered:
        """Each run's page says which run it was (in `ranked`); the second run waits for `release`."""

        def search(self, query: SearchQuery) -> SearchPage:
            calls.append(time.monotonic())
            if len(calls) == 2:
                release.wait(10)
            return real.search(query).model_copy(update={"ranked": len(calls)})

    cache = ReadCache(LocalBackend(), CacheSettings(search_ttl_seconds=1, search_stale_seconds=60), read_change_stamp)
    query, index = SearchQuery(text="expiring"), Numbered()

    def ranked() -> int:
        return int(json.loads(route.run_search(query, cache, index))["ranked"])

    assert (ranked(), ranked(), len(calls)) == (1, 1, 1)  # the second is a hit
    time.sleep(1.05)
    began = time.monotonic()
    assert ranked() == 1  # stale, sent while the refresh is held
    assert ranked() == 1 and time.monotonic() - began < 5
    deadline = time.monotonic() + 5
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(calls) == 2  # one refresh for both requests
    release.set()
    deadline = time.monotonic() + 5
    while ranked() != 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (ranked(), len(calls)) == (2, 2)
    assert route._refreshing == set()


def test_a_change_is_never_answered_stale(client: TestClient) -> None:
    """A change to any service moves the token on: the old answer is not sent, even inside the window."""
    body = {"query": "stalecheck"}
    listed("stalecheck-one")
    assert client.post(SEARCH, json=body).json()["total"] == 1
    listed("stalecheck-two")
    assert client.post(SEARCH, json=body).json()["total"] == 2
