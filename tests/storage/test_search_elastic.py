"""The Elasticsearch backend: request building and response reading (pure), the client wiring
(against a local stand-in server), and, when ELASTICSEARCH_URL is set, a real cluster."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from core.errors import UpstreamUnavailableError
from core.settings import SearchSettings, Settings
from storage.repositories.service_signals import Signals
from storage.search import Capability, SearchDocumentIn, SearchQuery, get_search_index
from storage.search.elastic import (
    AGGREGATIONS,
    MAPPINGS,
    ElasticsearchIndex,
    build_search_request,
    parse_search_response,
    to_document,
)
from tests.support.fake_elasticsearch import FakeElasticsearch
from tests.support.services import free_port

ELASTICSEARCH_URL = os.environ.get("ELASTICSEARCH_URL")


def doc(name: str, **fields: Any) -> SearchDocumentIn:
    base: dict[str, Any] = {
        "service_id": str(uuid.uuid4()),
        "name": name,
        "version": "1.0.0",
        "description": "A service",
        "category": "chat",
        "tags": [],
        "provider_id": "acme",
        "provider_name": "Acme AI",
        "pricing_model": "per-token",
        "compliance_level": "public",
        "status": "active",
        "published_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    return SearchDocumentIn(**{**base, **fields})


def request_for(**query: Any) -> dict[str, Any]:
    return build_search_request(SearchQuery(**query))


# --- building the request ------------------------------------------------------------------


def test_text_becomes_a_boosted_best_fields_multi_match() -> None:
    request = request_for(text="fast chat")
    assert request["query"]["bool"]["must"] == [
        {"multi_match": {"query": "fast chat", "fields": ["name^3", "description^2", "tags"], "type": "best_fields"}}
    ]
    assert request["sort"][0] == "_score"
    assert "track_scores" not in request


@pytest.mark.parametrize("text", ["", "   ", "?!*", "the"])
def test_no_meaningful_text_matches_all(text: str) -> None:
    assert request_for(text=text)["query"]["bool"]["must"] == [{"match_all": {}}]


def test_only_active_services_unless_deprecated_are_asked_for() -> None:
    assert request_for()["query"]["bool"]["filter"] == [{"terms": {"status": ["active"]}}]
    with_deprecated = request_for(include_deprecated=True)["query"]["bool"]["filter"]
    assert with_deprecated == [{"terms": {"status": ["active", "deprecated"]}}]


def test_every_filter_is_a_term_on_its_keyword_field_and_tags_must_all_match() -> None:
    filters = {
        "category": "chat",
        "pricing_model": "free",
        "compliance_level": "internal",
        "provider_id": "globex",
        "tags": ["eu", "gdpr"],
    }
    clauses = request_for(filters=filters)["query"]["bool"]["filter"]
    assert clauses == [
        {"terms": {"status": ["active"]}},
        {"term": {"category": "chat"}},
        {"term": {"pricing.model": "free"}},
        {"term": {"compliance.level": "internal"}},
        {"term": {"provider.id": "globex"}},
        {"term": {"tags": "eu"}},
        {"term": {"tags": "gdpr"}},
    ]


def test_paging_sorting_and_facets() -> None:
    request = request_for(pagination={"offset": 40, "limit": 20}, sort="name")
    assert (request["from"], request["size"], request["track_total_hits"]) == (40, 20, True)
    assert request["sort"] == [{"name.keyword": "asc"}, {"id": "asc"}]
    assert request["track_scores"] is True
    newest = request_for(sort="newest")["sort"]
    assert newest == [{"published_at": {"order": "desc", "missing": "_last"}}, {"id": "asc"}]
    assert {name: request["aggs"][name] for name in AGGREGATIONS} == {
        "category": {"terms": {"field": "category", "size": 20}},
        "pricing_model": {"terms": {"field": "pricing.model", "size": 20}},
        "compliance_level": {"terms": {"field": "compliance.level", "size": 20}},
        "tags": {"terms": {"field": "tags", "size": 20}},
    }
    json.dumps(request)  # sent as is


def _field_type(path: str) -> str:
    node: dict[str, Any] = MAPPINGS
    for part in path.split("."):
        properties = node.get("properties") or node.get("fields")
        assert properties is not None and part in properties, path
        node = properties[part]
    return str(node["type"])


def test_every_field_filtered_sorted_or_aggregated_on_is_a_keyword_or_date() -> None:
    request = request_for(filters={"category": "c", "pricing_model": "p", "compliance_level": "l", "provider_id": "x"})
    fields = [next(iter(clause[kind])) for clause in request["query"]["bool"]["filter"] for kind in clause]
    fields += [*AGGREGATIONS.values(), "name.keyword", "id", "published_at"]
    assert {field: _field_type(field) for field in fields} == {
        field: ("date" if field == "published_at" else "keyword") for field in fields
    }
    assert "embedding_vector" not in MAPPINGS["properties"]


def test_signal_filters_are_ranges_and_a_document_without_the_figure_matches_no_bound() -> None:
    filters = request_for(filters={"min_availability": 99.5, "max_latency_ms": 400, "min_calls_30d": 10})
    assert filters["query"]["bool"]["filter"][1:] == [
        {"range": {"signals.availability": {"gte": 99.5}}},
        {"range": {"signals.latency_p95_ms": {"lte": 400}}},
        {"range": {"signals.calls_30d": {"gte": 10}}},
    ]
    # At least 0 calls is every document: no clause (a range would drop documents without the field).
    assert request_for(filters={"min_calls_30d": 0})["query"]["bool"]["filter"] == [{"terms": {"status": ["active"]}}]


@pytest.mark.parametrize(
    ("sort", "first"),
    [
        ("popularity", {"signals.calls_30d": {"order": "desc", "missing": "_last"}}),
        ("availability", {"signals.availability": {"order": "desc", "missing": "_last"}}),
        ("latency", {"signals.latency_p95_ms": {"order": "asc", "missing": "_last"}}),
    ],
)
def test_signal_sorts_put_the_signal_first_then_relevance_then_newest(sort: str, first: dict[str, Any]) -> None:
    request = request_for(text="chat", sort=sort)
    assert request["sort"] == [first, "_score", {"published_at": {"order": "desc", "missing": "_last"}}, {"id": "asc"}]
    assert request["track_scores"] is True


def test_signal_facets_are_range_aggregations_with_the_sql_buckets_and_an_unknown_count() -> None:
    aggs = request_for()["aggs"]
    assert aggs["popularity"] == {
        "range": {
            "field": "signals.calls_30d",
            "missing": 0,  # no figure: no calls recorded
            "ranges": [
                {"key": "0", "to": 1},
                {"key": "1-99", "from": 1, "to": 100},
                {"key": "100-999", "from": 100, "to": 1000},
                {"key": "1000-9999", "from": 1000, "to": 10_000},
                {"key": "10000+", "from": 10_000},
            ],
        }
    }
    assert aggs["availability"]["range"]["field"] == "signals.availability"
    assert [r["key"] for r in aggs["availability"]["range"]["ranges"]] == ["99.9+", "99-99.9", "95-99", "<95"]
    assert aggs["availability_unknown"] == {"missing": {"field": "signals.availability"}}
    assert aggs["latency"]["range"]["ranges"][0] == {"key": "<250", "to": 250}
    assert aggs["latency_unknown"] == {"missing": {"field": "signals.latency_p95_ms"}}
    assert "popularity_unknown" not in aggs
    for field in ("signals.calls_30d", "signals.availability", "signals.latency_p95_ms", "signals.latency_p50_ms"):
        assert _field_type(field) in {"long", "float"}


def test_signals_travel_in_the_document_and_back_in_the_hit_and_facets() -> None:
    document = doc("busy", calls_30d=1234, availability=99.95, latency_p50_ms=120.0, latency_p95_ms=310.5)
    source = json.loads(json.dumps(to_document(document)))
    assert source["signals"] == {
        "calls_30d": 1234,
        "availability": 99.95,
        "latency_p50_ms": 120.0,
        "latency_p95_ms": 310.5,
    }
    raw = {
        "hits": {"total": {"value": 3}, "hits": [{"_id": "x", "_score": 1.0, "_source": source}]},
        "aggregations": {
            "popularity": {"buckets": [{"key": "0", "doc_count": 2}, {"key": "1000-9999", "doc_count": 1}]},
            "availability": {"buckets": [{"key": "99.9+", "doc_count": 1}, {"key": "<95", "doc_count": 0}]},
            "availability_unknown": {"doc_count": 2},
            "latency": {"buckets": [{"key": "250-499", "doc_count": 1}]},
            "latency_unknown": {"doc_count": 0},
        },
    }
    page = parse_search_response(raw)
    hit = page.items[0]
    assert (hit.calls_30d, hit.availability, hit.latency_p50_ms, hit.latency_p95_ms) == (1234, 99.95, 120.0, 310.5)
    assert [(b.value, b.count) for b in page.facets.popularity] == [("0", 2), ("1000-9999", 1)]
    assert [(b.value, b.count) for b in page.facets.availability] == [("99.9+", 1), ("unknown", 2)]
    assert [(b.value, b.count) for b in page.facets.latency] == [("250-499", 1)]
    assert page.facets.approximate is False  # Elasticsearch counts every match


# --- reading the response ------------------------------------------------------------------


def test_published_at_comes_back_as_the_same_instant_to_the_microsecond() -> None:
    document = doc("acme-chat", published_at=datetime(2026, 12, 6, 21, 33, 7, 277731, tzinfo=UTC))
    source = json.loads(json.dumps(to_document(document)))  # as the cluster stores and returns it
    empty = {"buckets": []}
    raw = {
        "hits": {"total": {"value": 1, "relation": "eq"}, "hits": [{"_id": "x", "_score": 1.0, "_source": source}]},
        "aggregations": dict.fromkeys(("category", "pricing_model", "compliance_level", "tags"), empty),
    }
    [hit] = parse_search_response(raw).items
    # The same string the service and the list carry for this instant (pydantic, UTC as "Z").
    assert hit.model_dump(mode="json", by_alias=True)["publishedAt"] == "2026-12-06T21:33:07.277731Z"


def test_a_response_becomes_a_page() -> None:
    document = doc("acme-chat", tags=["eu"], capabilities=[Capability(name="chat")], certifications=["SOC2"])
    raw = {
        "hits": {
            "total": {"value": 41, "relation": "eq"},
            "hits": [{"_id": document.service_id, "_score": 2.5, "_source": to_document(document)}],
        },
        "aggregations": {
            "category": {"buckets": [{"key": "chat", "doc_count": 30}, {"key": "embeddings", "doc_count": 11}]},
            "pricing_model": {"buckets": [{"key": "per-token", "doc_count": 41}]},
            "compliance_level": {"buckets": []},
            "tags": {"buckets": [{"key": "eu", "doc_count": 7}]},
        },
    }
    page = parse_search_response(raw)
    assert page.total == 41
    hit = page.items[0]
    assert (hit.service_id, hit.name, hit.version, hit.score) == (document.service_id, "acme-chat", "1.0.0", 2.5)
    assert (hit.category, hit.tags, hit.provider_id, hit.status) == ("chat", ["eu"], "acme", "active")
    assert (hit.pricing_model, hit.compliance_level, hit.published_at) == ("per-token", "public", document.published_at)
    assert [(b.value, b.count) for b in page.facets.category] == [("chat", 30), ("embeddings", 11)]
    assert [(b.value, b.count) for b in page.facets.tags] == [("eu", 7)]
    assert page.facets.compliance_level == []


def test_a_sparse_response_still_reads() -> None:
    source = to_document(doc("bare", pricing_model=None, compliance_level=None, published_at=None))
    raw = {"hits": {"total": 1, "hits": [{"_id": "x", "_score": None, "_source": source}]}}
    page = parse_search_response(raw)
    assert page.total == 1
    hit = page.items[0]
    assert (hit.pricing_model, hit.compliance_level, hit.published_at, hit.score) == (None, None, None, None)
    assert page.facets.category == [] and page.facets.tags == []


# --- the client wiring, against a local stand-in ---------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeElasticsearch]:
    with FakeElasticsearch() as server:
        yield server


def backend(url: str, index: str = "services-test") -> ElasticsearchIndex:
    return ElasticsearchIndex(Elasticsearch(url, max_retries=0, request_timeout=5), index)


def test_first_use_creates_the_index_with_the_mapping_once(fake: FakeElasticsearch) -> None:
    index = backend(fake.url)
    index.ensure_index()
    index.ensure_index()  # "already exists" is fine
    created = [r for r in fake.requests if r.method == "PUT" and r.path == "/services-test"]
    assert len(created) == 2
    assert created[0].body["mappings"] == MAPPINGS
    assert created[0].body["settings"]["refresh_interval"] == "1s"


def test_index_remove_and_search_requests(fake: FakeElasticsearch) -> None:
    index = backend(fake.url)
    document = doc("acme-chat")
    index.index(document)
    put = fake.requests[-1]
    assert (put.method, put.path, put.params["refresh"]) == (
        "PUT",
        f"/services-test/_doc/{document.service_id}",
        ["wait_for"],
    )
    assert put.body == {**to_document(document), "indexed_at": put.body["indexed_at"]}
    assert fake.requests[0].path == "/services-test", "the index was created before the first write"

    index.remove(document.service_id)
    index.remove(document.service_id)  # a 404 is not an error
    assert [r.method for r in fake.requests[-2:]] == ["DELETE", "DELETE"]

    fake.search_response = {"hits": {"total": {"value": 0}, "hits": []}, "aggregations": {}}
    query = SearchQuery(text="chat", filters={"tags": ["eu"]})
    page = index.search(query)
    sent = fake.requests[-1]
    assert (sent.method, sent.path) == ("POST", "/services-test/_search")
    assert sent.body == build_search_request(query)
    assert page.total == 0


def test_index_many_sends_bulk_then_one_refresh(fake: FakeElasticsearch) -> None:
    documents = [doc(f"svc-{i}") for i in range(3)]
    assert backend(fake.url).index_many(documents) == 3
    assert set(fake.documents) == {d.service_id for d in documents}
    assert [r.path for r in fake.requests][-2:] == ["/_bulk", "/services-test/_refresh"]


def test_update_signals_sends_partial_updates_and_skips_unlisted_services(fake: FakeElasticsearch) -> None:
    listed = doc("listed")
    index = backend(fake.url)
    index.index_many([listed])
    figures = {"calls_30d": 7, "availability": 99.0, "latency_p50_ms": 80.0, "latency_p95_ms": 200.0}
    now = datetime(2026, 12, 7, tzinfo=UTC)
    rows = [Signals(service_id=sid, updated_at=now, **figures) for sid in (listed.service_id, "not-listed")]
    assert index.update_signals(rows) == 1
    assert fake.documents[listed.service_id]["signals"] == figures
    assert fake.documents[listed.service_id]["name"] == "listed"  # the rest of the document kept
    assert "not-listed" not in fake.documents
    assert [r.path for r in fake.requests][-2:] == ["/_bulk", "/services-test/_refresh"]


def test_an_unreachable_or_failing_server_is_a_503() -> None:
    with pytest.raises(UpstreamUnavailableError) as raised:
        backend(f"http://127.0.0.1:{free_port()}").search(SearchQuery())
    assert raised.value.status_code == 503
    with FakeElasticsearch(fail_status=503) as failing, pytest.raises(UpstreamUnavailableError):
        backend(failing.url).index(doc("x"))


def test_settings_choose_the_backend(fake: FakeElasticsearch) -> None:
    settings = Settings(search=SearchSettings(backend="elasticsearch", elasticsearch_url=fake.url, index="chosen"))
    chosen = get_search_index(settings)
    assert isinstance(chosen, ElasticsearchIndex)
    assert get_search_index(settings) is chosen, "one client per URL and index"
    with pytest.raises(ValueError, match="ELASTICSEARCH_URL"):
        get_search_index(Settings(search=SearchSettings(backend="elasticsearch")))


# --- a real cluster -------------------------------------------------------------------------

needs_server = pytest.mark.skipif(
    not ELASTICSEARCH_URL,
    reason="ELASTICSEARCH_URL is not set: no Elasticsearch server can be installed on these machines",
)


@pytest.fixture
def live() -> Iterator[ElasticsearchIndex]:
    assert ELASTICSEARCH_URL
    client = Elasticsearch(ELASTICSEARCH_URL, request_timeout=30)
    name = f"marketplace-test-{uuid.uuid4().hex[:10]}"
    index = ElasticsearchIndex(client, name)
    index.ensure_index()
    yield index
    client.indices.delete(index=name, ignore_unavailable=True)


@needs_server
def test_live_ranking_stemming_filters_and_facets(live: ElasticsearchIndex) -> None:
    live.index_many(
        [
            doc("quasar", description="Summaries of legal reports", tags=["legal"]),
            doc("described", description="Quasar grade summaries", tags=["legal", "eu"], pricing_model="free"),
            doc("tagged", description="Translates documents", tags=["quasar"]),
            doc("old", description="Quasar things", status="deprecated"),
            doc("talker", description="A model to chat with customers", category="embeddings", tags=["eu"]),
        ]
    )
    page = live.search(SearchQuery(text="quasar"))
    assert [hit.name for hit in page.items] == ["quasar", "described", "tagged"]
    assert page.total == 3
    assert {(b.value, b.count) for b in page.facets.pricing_model} == {("per-token", 2), ("free", 1)}
    assert [hit.name for hit in live.search(SearchQuery(text="chatting")).items] == ["talker"]
    assert live.search(SearchQuery(text="quasar", include_deprecated=True)).total == 4
    tagged = live.search(SearchQuery(filters={"tags": ["legal", "eu"]}))
    assert [hit.name for hit in tagged.items] == ["described"]
    assert live.search(SearchQuery(filters={"category": "embeddings", "provider_id": "acme"})).total == 1


@needs_server
def test_live_upsert_and_remove(live: ElasticsearchIndex) -> None:
    document = doc("changing", description="Translates contracts")
    live.index(document)
    live.index(document.model_copy(update={"description": "Summarizes meetings"}))
    assert live.search(SearchQuery(text="contracts")).total == 0
    assert live.search(SearchQuery(text="meetings")).total == 1
    live.remove(document.service_id)
    live.remove(document.service_id)
    deadline = time.monotonic() + 5
    while live.search(SearchQuery(text="meetings")).total and time.monotonic() < deadline:
        time.sleep(0.2)
    assert live.search(SearchQuery(text="meetings")).total == 0


@needs_server
def test_live_signals_rank_filter_bucket_and_update_in_place(live: ElasticsearchIndex) -> None:
    busy = doc("busy", calls_30d=5000, availability=99.95, latency_p95_ms=180.0)
    slow = doc("slow", calls_30d=40, availability=98.0, latency_p95_ms=1500.0)
    unseen = doc("unseen")
    live.index_many([busy, slow, unseen])
    assert [h.name for h in live.search(SearchQuery(sort="popularity")).items] == ["busy", "slow", "unseen"]
    assert [h.name for h in live.search(SearchQuery(sort="latency")).items] == ["busy", "slow", "unseen"]
    assert [h.name for h in live.search(SearchQuery(filters={"min_availability": 99})).items] == ["busy"]
    assert [h.name for h in live.search(SearchQuery(filters={"max_latency_ms": 200})).items] == ["busy"]
    page = live.search(SearchQuery())
    assert [(b.value, b.count) for b in page.facets.popularity] == [("0", 1), ("1-99", 1), ("1000-9999", 1)]
    assert [(b.value, b.count) for b in page.facets.availability] == [("99.9+", 1), ("95-99", 1), ("unknown", 1)]
    now = datetime.now(UTC)
    live.update_signals(
        [
            Signals(
                unseen.service_id,
                calls_30d=10**6,
                availability=None,
                latency_p50_ms=None,
                latency_p95_ms=None,
                updated_at=now,
            )
        ]
    )
    assert live.search(SearchQuery(sort="popularity")).items[0].name == "unseen"
