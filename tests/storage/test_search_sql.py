"""The SQL search backend on SQLite (FTS5) and PostgreSQL (tsvector): ranking, filters, facets, paging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from core.errors import SpecValidationError
from storage.cache import get_cache
from storage.database import session_scope
from storage.models import SearchDocument
from storage.repositories import services
from storage.repositories.services import Actor
from storage.search import SearchIndex, SearchPage, SearchQuery, document_from_service, get_search_index
from storage.search.sql import SqlSearchIndex
from storage.search.terms import fts5_query, search_terms
from tests.support.specs import make_spec

PROVIDER = Actor("acme", "provider")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def index(database_url: str) -> SearchIndex:
    search_index = get_search_index()
    assert isinstance(search_index, SqlSearchIndex)
    return search_index


def listed(
    index: SearchIndex,
    name: str,
    *,
    description: str = "A service",
    tags: list[str] | None = None,
    status: str = "active",
    days: int = 0,
    **spec: Any,
) -> str:
    """A stored service in `status`, published T0 + days, indexed; returns its id."""
    with session_scope() as session:
        service = services.create_submitted(
            session, make_spec(name=name, description=description, tags=tags or [], **spec), PROVIDER
        )
        service.status = status
        service.published_at = T0 + timedelta(days=days)
        session.flush()
        document = document_from_service(service)
    index.index(document)
    return service.id


def names(page: SearchPage) -> list[str]:
    return [hit.name for hit in page.items]


def search(index: SearchIndex, text: str = "", **query: Any) -> SearchPage:
    return index.search(SearchQuery(text=text, **query))


def test_a_name_hit_outranks_a_description_hit_which_outranks_a_tag_hit(index: SearchIndex) -> None:
    listed(index, "tagged", description="Translates legal documents", tags=["quasar"])
    listed(index, "described", description="Quasar grade summaries of reports", tags=["legal"])
    listed(index, "quasar", description="Summaries of legal reports", tags=["legal"])
    listed(index, "unrelated", description="Generates images")
    page = search(index, "quasar")
    assert names(page) == ["quasar", "described", "tagged"]
    scores = [hit.score for hit in page.items]
    assert all(score is not None for score in scores)
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    assert page.total == 3


def test_stemming_finds_other_forms_of_a_word(index: SearchIndex) -> None:
    listed(index, "talker", description="A model to chat with customers")
    listed(index, "painter", description="Paints pictures")
    assert names(search(index, "chatting")) == ["talker"]
    assert names(search(index, "Customer")) == ["talker"]


def test_every_word_must_match_and_stop_words_are_ignored(index: SearchIndex) -> None:
    listed(index, "both", description="Fast translation of contracts")
    listed(index, "one", description="Fast summaries")
    assert names(search(index, "fast translation")) == ["both"]
    assert names(search(index, "the fast translation of a contract")) == ["both"]


def test_each_filter_and_filters_combined(index: SearchIndex) -> None:
    listed(index, "alpha", category="chat", pricing={"model": "free"}, compliance={"level": "public"}, tags=["eu"])
    listed(
        index,
        "beta",
        category="embeddings",
        pricing={"model": "per-request"},
        compliance={"level": "internal"},
        provider={"id": "globex", "name": "Globex"},
        tags=["eu", "fast"],
    )
    listed(index, "gamma", category="chat", pricing={"model": "per-request"}, compliance={"level": "internal"})

    def filtered(**filters: Any) -> list[str]:
        return sorted(names(search(index, filters=filters)))

    assert filtered(category="chat") == ["alpha", "gamma"]
    assert filtered(pricing_model="per-request") == ["beta", "gamma"]
    assert filtered(compliance_level="public") == ["alpha"]
    assert filtered(provider_id="globex") == ["beta"]
    assert filtered(tags=["eu"]) == ["alpha", "beta"]
    assert filtered(category="chat", pricing_model="per-request", compliance_level="internal") == ["gamma"]
    assert filtered(category="chat", provider_id="globex") == []
    assert filtered(category="poetry") == []


def test_tags_must_all_be_present(index: SearchIndex) -> None:
    listed(index, "both", tags=["eu", "gdpr"])
    listed(index, "one", tags=["eu"])
    listed(index, "other", tags=["gdpr", "us"])
    assert names(search(index, filters={"tags": ["eu", "gdpr"]})) == ["both"]
    assert names(search(index, filters={"tags": ["eu", "missing"]})) == []


def test_only_listed_services_are_returned(index: SearchIndex) -> None:
    listed(index, "live", description="Summaries", days=1)
    listed(index, "old", description="Summaries", status="deprecated")
    for status in ("testing", "retired", "failed"):
        listed(index, f"not-{status}", description="Summaries", status=status)
    assert names(search(index, "summaries")) == ["live"]
    assert names(search(index, "summaries", include_deprecated=True)) == ["live", "old"]
    assert search(index, include_deprecated=True).total == 2


def test_pagination_and_total(index: SearchIndex) -> None:
    for day in range(7):
        listed(index, f"svc-{day}", description="Summaries", days=day)
    first = search(index, "summaries", pagination={"offset": 0, "limit": 3})
    second = search(index, "summaries", pagination={"offset": 3, "limit": 3})
    last = search(index, "summaries", pagination={"offset": 6, "limit": 3})
    beyond = search(index, "summaries", pagination={"offset": 50, "limit": 3})
    assert [p.total for p in (first, second, last, beyond)] == [7, 7, 7, 7]
    everything = names(first) + names(second) + names(last)
    assert sorted(everything) == [f"svc-{day}" for day in range(7)]
    assert len(names(last)) == 1
    assert beyond.items == []
    assert beyond.facets.category[0].count == 7, "facets cover the whole result, not the page"


def test_sorting_by_newest_and_by_name(index: SearchIndex) -> None:
    listed(index, "Zeta", days=2)
    listed(index, "alpha", days=0)
    listed(index, "beta", days=3)
    listed(index, "Delta", days=1)
    assert names(search(index, sort="newest")) == ["beta", "Zeta", "Delta", "alpha"]
    assert names(search(index)) == ["beta", "Zeta", "Delta", "alpha"], "no text: relevance falls back to newest"
    assert names(search(index, sort="name")) == ["Delta", "Zeta", "alpha", "beta"], "code-point order"
    assert all(hit.score is None for hit in search(index).items)


def test_facets_count_the_query_and_filter_result(index: SearchIndex) -> None:
    listed(index, "a", description="Summaries", category="chat", pricing={"model": "free"}, tags=["eu", "fast"])
    listed(index, "b", description="Summaries", category="chat", compliance={"level": "internal"}, tags=["eu"])
    listed(index, "c", description="Summaries", category="summarization", tags=["fast"])
    listed(index, "d", description="Pictures", category="image-generation", tags=["eu"])
    listed(index, "e", description="Summaries", status="retired", tags=["eu"])
    page = search(index, "summaries")

    def counts(buckets: list[Any]) -> list[tuple[str, int]]:
        return [(b.value, b.count) for b in buckets]

    assert page.total == 3
    assert counts(page.facets.category) == [("chat", 2), ("summarization", 1)]
    assert counts(page.facets.pricing_model) == [("per-token", 2), ("free", 1)]
    assert counts(page.facets.compliance_level) == [("public", 2), ("internal", 1)]
    assert counts(page.facets.tags) == [("eu", 2), ("fast", 2)]
    narrowed = search(index, "summaries", filters={"category": "chat", "tags": ["fast"]})
    assert counts(narrowed.facets.category) == [("chat", 1)]
    assert counts(narrowed.facets.tags) == [("eu", 1), ("fast", 1)]


def test_remove_drops_the_document(index: SearchIndex) -> None:
    kept = listed(index, "kept", description="Summaries")
    gone = listed(index, "gone", description="Summaries")
    index.remove(gone)
    index.remove(gone)  # idempotent
    page = search(index, "summaries")
    assert [hit.service_id for hit in page.items] == [kept]
    assert page.total == 1


def test_index_is_an_upsert(index: SearchIndex) -> None:
    service_id = listed(index, "changing", description="Translates contracts", tags=["legal"])
    with session_scope() as session:
        service = services.get(session, service_id)
        service.description = "Summarizes meetings"
        service.tags = ["meetings"]
        service.status = "deprecated"
        session.flush()
        document = document_from_service(service)
    index.index(document)
    assert search(index, "contracts", include_deprecated=True).total == 0
    hit = search(index, "meetings", include_deprecated=True).items[0]
    assert (hit.service_id, hit.status, hit.tags) == (service_id, "deprecated", ["meetings"])
    assert search(index, "meetings").total == 0
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(SearchDocument)) == 1


def test_index_many_and_full_text_stay_in_step(index: SearchIndex) -> None:
    ids = [listed(index, f"bulk-{i}", description="Summaries") for i in range(3)]
    with session_scope() as session:
        documents = [document_from_service(services.get(session, i)) for i in ids]
    assert index.index_many(documents) == 3
    assert index.index_many([]) == 0
    assert search(index, "summaries").total == 3


@pytest.mark.parametrize(
    "hostile",
    [
        '"; DROP TABLE services; --',
        "NEAR(",
        "*",
        "summaries*",
        "name:summaries",
        "\"unbalanced 'quotes",
        "AND OR NOT",
        "-summaries",
        "^summaries",
        "(summaries",
        "\x00",
        "summaries\x00",
        "résumé 東京 données",
        "🤖🤖",
        "a" * 512,
    ],
)
def test_hostile_query_text_returns_cleanly(index: SearchIndex, hostile: str) -> None:
    listed(index, "target", description="Summaries of résumé data from 東京")
    page = search(index, hostile)
    assert page.total == len(page.items) <= 1
    with session_scope() as session:
        assert session.execute(text("SELECT count(*) FROM services")).scalar_one() == 1


def test_unicode_words_match(index: SearchIndex) -> None:
    listed(index, "target", description="Résumé analysis for données")
    assert names(search(index, "données")) == ["target"]


def test_punctuation_only_or_empty_text_matches_everything(index: SearchIndex) -> None:
    listed(index, "one", description="Summaries")
    listed(index, "two", description="Pictures")
    for query in ("", "   ", "?!", '"', "the"):
        assert search(index, query).total == 2, query


def test_indexing_and_removing_invalidate_cached_searches(index: SearchIndex) -> None:
    service_id = listed(index, "fresh")
    with session_scope() as session:
        document = document_from_service(services.get(session, service_id))
    cache = get_cache()
    for change in (lambda: index.index(document), lambda: index.remove(service_id)):
        cache.put_search("q", cache.search_token(), '{"total":0}')
        assert cache.get_search("q", cache.search_token()) is not None
        change()
        assert cache.get_search("q", cache.search_token()) is None


@pytest.mark.parametrize(
    ("query", "pointer"),
    [
        ({"pagination": {"limit": 101}}, "/pagination/limit"),
        ({"pagination": {"limit": 0}}, "/pagination/limit"),
        ({"pagination": {"offset": -1}}, "/pagination/offset"),
        ({"pagination": {"offset": 9990, "limit": 20}}, "/pagination/offset"),
        ({"sort": "popular"}, "/sort"),
        ({"filters": {"min_availability": 100.5}}, "/filters/min_availability"),
        ({"filters": {"min_availability": -1}}, "/filters/min_availability"),
        ({"filters": {"min_availability": "high"}}, "/filters/min_availability"),
        ({"filters": {"min_availability": float("nan")}}, "/filters/min_availability"),
        ({"filters": {"max_latency_ms": 0}}, "/filters/max_latency_ms"),
        ({"filters": {"max_latency_ms": float("inf")}}, "/filters/max_latency_ms"),
        ({"filters": {"min_calls_30d": -1}}, "/filters/min_calls_30d"),
        ({"filters": {"min_calls_30d": 1.5}}, "/filters/min_calls_30d"),
        ({"text": 42}, "/text"),
        ({"filters": {"tags": "eu"}}, "/filters/tags"),
        ({"filters": {"colour": "red"}}, "/filters/colour"),
        ({"include_deprecated": "yes"}, "/include_deprecated"),
    ],
)
def test_bad_queries_are_refused_with_a_pointer(query: dict[str, Any], pointer: str) -> None:
    with pytest.raises(SpecValidationError) as raised:
        SearchQuery(**query)
    assert raised.value.status_code == 422
    assert pointer in [d["pointer"] for d in raised.value.details]


def test_document_from_service_reads_the_spec(database_url: str) -> None:
    spec = make_spec(capabilities=[{"name": "chat-completion", "description": "Chats"}])
    with session_scope() as session:
        service = services.create_submitted(session, spec, PROVIDER)
        document = document_from_service(service)
    assert document.service_id == service.id
    assert (document.name, document.version, document.category) == ("acme-chat", "1.0.0", "chat")
    assert (document.provider_id, document.provider_name) == ("acme", "Acme AI")
    assert (document.pricing_model, document.compliance_level) == ("per-token", "public")
    assert document.tags == ["chat", "english"]
    assert document.certifications == ["SOC2"]
    assert [c.name for c in document.capabilities] == ["chat-completion"]
    assert document.status == "submitted"


def test_user_text_becomes_quoted_fts5_terms() -> None:
    assert search_terms('The "chat" NEAR(models) -fast* ^x name:y') == [
        "chat",
        "near",
        "models",
        "fast",
        "x",
        "name",
        "y",
    ]
    assert search_terms("?!* -- ;") == []
    assert search_terms("chat Chat CHAT") == ["chat"]
    assert search_terms("re\u0301sume\u0301") == ["résumé"]  # decomposed accents stay in the word
    assert fts5_query(["chat", "near"]) == '"chat" "near"'
