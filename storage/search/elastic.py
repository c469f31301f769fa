"""The Elasticsearch search backend (official client), with the index mapping of the marketplace seed.

Building the request and reading the response are pure functions, tested without a server;
`ElasticsearchIndex` only sends them. Departures from the seed's mapping (section 4.3):
- no `embedding_vector`: nothing here computes embeddings, and an absent dense_vector costs nothing
  to add later (a new field in the mapping);
- the seed's custom analyzer named `english` (standard + stop words) shadowed the built-in one and
  so disabled stemming; it is gone, and `name` uses the built-in `english` analyzer too, so that
  "chatting" finds "chat" as the SQL backend does;
- one shard (ranking statistics are per shard; a catalogue of ~10^5 documents fits one), a replica
  when the cluster has a second node, and a 1 s refresh (`refresh=wait_for` waits for it);
- `version`, `published_at` and `provider.name` are stored for the hits;
- `signals` holds what is known of the service's use and health (service_signals): calls in the
  last 30 days, observed availability (percent) and p50/p95 latency (ms). They are written with
  the document and refreshed in place by `update_signals` (partial updates), so that the signal
  sorts, filters and range facets need no join. The seed's `metrics` stay as they were, unused.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from elasticsearch import ApiError, BadRequestError, Elasticsearch, NotFoundError, TransportError, helpers

from core.errors import UpstreamUnavailableError
from storage.repositories.service_signals import Signals
from storage.search import (
    FACET_SIZE,
    SIGNAL_FACETS,
    SIGNAL_FIELDS,
    SIGNAL_SORTS,
    UNKNOWN,
    FacetBucket,
    Facets,
    SearchDocumentIn,
    SearchHit,
    SearchPage,
    SearchQuery,
    SortOrder,
)
from storage.search.terms import search_terms

MAPPINGS: dict[str, Any] = {
    "properties": {
        "id": {"type": "keyword"},
        "name": {"type": "text", "analyzer": "english", "fields": {"keyword": {"type": "keyword"}}},
        "version": {"type": "keyword"},
        "description": {"type": "text", "analyzer": "english"},
        "category": {"type": "keyword"},
        "tags": {"type": "keyword"},
        "provider": {"properties": {"id": {"type": "keyword"}, "name": {"type": "text"}}},
        "capabilities": {
            "type": "nested",
            "properties": {"name": {"type": "keyword"}, "description": {"type": "text"}},
        },
        "pricing": {"properties": {"model": {"type": "keyword"}, "rates": {"type": "nested"}}},
        "compliance": {"properties": {"level": {"type": "keyword"}, "certifications": {"type": "keyword"}}},
        "metrics": {
            "properties": {
                "totalRequests": {"type": "long"},
                "averageLatency": {"type": "float"},
                "errorRate": {"type": "float"},
                "popularity": {"type": "long"},
            }
        },
        "ratings": {"properties": {"average": {"type": "float"}, "count": {"type": "long"}}},
        "signals": {
            "properties": {
                "calls_30d": {"type": "long"},
                "availability": {"type": "float"},
                "latency_p50_ms": {"type": "float"},
                "latency_p95_ms": {"type": "float"},
            }
        },
        "published_at": {"type": "date"},
        "indexed_at": {"type": "date"},
        "status": {"type": "keyword"},
    }
}
INDEX_SETTINGS: dict[str, Any] = {"number_of_shards": 1, "auto_expand_replicas": "0-1", "refresh_interval": "1s"}
# Facet name -> document field.
AGGREGATIONS = {
    "category": "category",
    "pricing_model": "pricing.model",
    "compliance_level": "compliance.level",
    "tags": "tags",
}
NEWEST = [{"published_at": {"order": "desc", "missing": "_last"}}, {"id": "asc"}]
SIGNAL_SORT_FIELDS = {
    SortOrder.POPULARITY: {"signals.calls_30d": {"order": "desc", "missing": "_last"}},
    SortOrder.AVAILABILITY: {"signals.availability": {"order": "desc", "missing": "_last"}},
    SortOrder.LATENCY: {"signals.latency_p95_ms": {"order": "asc", "missing": "_last"}},
}
MISSING = "_unknown"  # suffix of the aggregation counting documents without the signal


def _signal_aggregations() -> dict[str, Any]:
    """Range facets over the signals (`from` inclusive, `to` exclusive, as the SQL buckets), and a
    count of documents with no figure (none for calls: no figure is 0 calls)."""
    aggs: dict[str, Any] = {}
    for facet, (name, buckets) in SIGNAL_FACETS.items():
        ranges = []
        for bucket in buckets:
            bounds: dict[str, Any] = {"key": bucket.value}
            if bucket.low is not None:
                bounds["from"] = bucket.low
            if bucket.high is not None:
                bounds["to"] = bucket.high
            ranges.append(bounds)
        field = f"signals.{name}"
        if name == "calls_30d":
            aggs[facet] = {"range": {"field": field, "ranges": ranges, "missing": 0}}
        else:
            aggs[facet] = {"range": {"field": field, "ranges": ranges}}
            aggs[facet + MISSING] = {"missing": {"field": field}}
    return aggs


def to_document(document: SearchDocumentIn, indexed_at: datetime | None = None) -> dict[str, Any]:
    """The stored source of one service, shaped as the mapping says."""
    return {
        "id": document.service_id,
        "name": document.name,
        "version": document.version,
        "description": document.description,
        "category": document.category,
        "tags": list(document.tags),
        "provider": {"id": document.provider_id, "name": document.provider_name},
        "capabilities": [c.model_dump() for c in document.capabilities],
        "pricing": {"model": document.pricing_model},
        "compliance": {"level": document.compliance_level, "certifications": list(document.certifications)},
        "status": document.status,
        "signals": {name: getattr(document, name) for name in SIGNAL_FIELDS},
        "published_at": document.published_at.isoformat() if document.published_at else None,
        "indexed_at": (indexed_at or datetime.now(UTC)).isoformat(),
    }


def build_search_request(query: SearchQuery) -> dict[str, Any]:
    """The `_search` body for a query: text match, filters, sort, page and facet aggregations."""
    # Same rule as the SQL backend: no meaningful word (empty, punctuation, stop words) matches all.
    if search_terms(query.text):
        text: dict[str, Any] = {
            "multi_match": {"query": query.text, "fields": ["name^3", "description^2", "tags"], "type": "best_fields"}
        }
    else:
        text = {"match_all": {}}
    request: dict[str, Any] = {
        "query": {"bool": {"must": [text], "filter": _filters(query)}},
        "from": query.pagination.offset,
        "size": query.pagination.limit,
        "sort": _sort(query.sort),
        "track_total_hits": True,
        "aggs": {
            **{name: {"terms": {"field": field, "size": FACET_SIZE}} for name, field in AGGREGATIONS.items()},
            **_signal_aggregations(),
        },
    }
    if query.sort is not SortOrder.RELEVANCE:
        request["track_scores"] = True  # scores are only computed for a _score sort otherwise
    return request


def _filters(query: SearchQuery) -> list[dict[str, Any]]:
    filters = query.filters
    clauses: list[dict[str, Any]] = [{"terms": {"status": list(query.statuses)}}]
    for field, value in (
        ("category", filters.category),
        ("pricing.model", filters.pricing_model),
        ("compliance.level", filters.compliance_level),
        ("provider.id", filters.provider_id),
    ):
        if value is not None:
            clauses.append({"term": {field: value}})
    clauses += [{"term": {"tags": tag}} for tag in filters.tags]  # one clause each: all must match
    # A document without the figure matches no bound on it (as NULL in SQL); calls default to 0.
    if filters.min_availability is not None:
        clauses.append({"range": {"signals.availability": {"gte": filters.min_availability}}})
    if filters.max_latency_ms is not None:
        clauses.append({"range": {"signals.latency_p95_ms": {"lte": filters.max_latency_ms}}})
    if filters.min_calls_30d:  # 0 asks for nothing
        clauses.append({"range": {"signals.calls_30d": {"gte": filters.min_calls_30d}}})
    return clauses


def _sort(order: SortOrder) -> list[Any]:
    if order is SortOrder.NAME:
        return [{"name.keyword": "asc"}, {"id": "asc"}]
    if order is SortOrder.NEWEST:
        return list(NEWEST)
    if order in SIGNAL_SORTS:
        return [SIGNAL_SORT_FIELDS[order], "_score", *NEWEST]
    return ["_score", *NEWEST]


def parse_search_response(raw: Mapping[str, Any]) -> SearchPage:
    """A page from a `_search` response body made by `build_search_request`."""
    hits = raw["hits"]
    items = [_hit(hit) for hit in hits["hits"]]
    aggregations = raw.get("aggregations") or {}
    facets: dict[str, list[FacetBucket]] = {
        name: [FacetBucket(value=str(b["key"]), count=int(b["doc_count"])) for b in agg.get("buckets", [])]
        for name, agg in aggregations.items()
        if name in AGGREGATIONS
    }
    for facet in SIGNAL_FACETS:
        agg = aggregations.get(facet) or {}
        listed = [FacetBucket(value=str(b["key"]), count=int(b["doc_count"])) for b in agg.get("buckets", [])]
        unknown = int((aggregations.get(facet + MISSING) or {}).get("doc_count", 0))
        listed += [FacetBucket(value=UNKNOWN, count=unknown)]
        facets[facet] = [bucket for bucket in listed if bucket.count]  # as the SQL backend: no empty buckets
    total = hits["total"]["value"] if isinstance(hits["total"], Mapping) else hits["total"]
    return SearchPage(items=items, total=int(total), facets=Facets(**facets))


def _hit(hit: Mapping[str, Any]) -> SearchHit:
    source = hit["_source"]
    score = hit.get("_score")
    return SearchHit(
        service_id=source["id"],
        name=source["name"],
        version=source["version"],
        description=source["description"],
        category=source["category"],
        tags=list(source.get("tags") or []),
        pricing_model=(source.get("pricing") or {}).get("model"),
        compliance_level=(source.get("compliance") or {}).get("level"),
        provider_id=source["provider"]["id"],
        status=source["status"],
        published_at=source.get("published_at"),
        score=float(score) if score is not None else None,
        **{name: value for name, value in (source.get("signals") or {}).items() if name in SIGNAL_FIELDS},
    )


@contextmanager
def _upstream() -> Iterator[None]:
    """Connection trouble and server errors are the search service being unavailable (503)."""
    try:
        yield
    except TransportError as exc:
        raise UpstreamUnavailableError(f"Elasticsearch is unreachable: {exc}") from exc
    except ApiError as exc:
        if exc.status_code < 500 and exc.status_code != 429:  # 429: the cluster is shedding load
            raise
        raise UpstreamUnavailableError(f"Elasticsearch failed: {exc}") from exc


class ElasticsearchIndex:
    """Search in an Elasticsearch index; the index is created with our mapping on first use."""

    def __init__(self, client: Elasticsearch, index: str) -> None:
        self._client = client
        self._index = index
        self._ensured = False

    def ensure_index(self) -> None:
        """Create the index with the mapping unless it exists (idempotent, safe to race)."""
        with _upstream():
            try:
                self._client.indices.create(index=self._index, mappings=MAPPINGS, settings=INDEX_SETTINGS)
            except BadRequestError as exc:
                if exc.error != "resource_already_exists_exception":
                    raise
        self._ensured = True

    def index(self, document: SearchDocumentIn) -> None:
        self._ready()
        with _upstream():
            self._client.index(
                index=self._index, id=document.service_id, document=to_document(document), refresh="wait_for"
            )

    def index_many(self, documents: Iterable[SearchDocumentIn]) -> int:
        self._ready()
        actions = ({"_index": self._index, "_id": d.service_id, "_source": to_document(d)} for d in documents)
        with _upstream():
            # One refresh at the end, rather than a wait for one after every chunk of 500.
            indexed, _ = helpers.bulk(self._client, actions, stats_only=True)
            self._client.indices.refresh(index=self._index)
        return int(indexed)

    def remove(self, service_id: str) -> None:
        self._ready()
        with _upstream(), suppress(NotFoundError):  # already gone: removal is idempotent
            self._client.delete(index=self._index, id=service_id, refresh="wait_for")

    def update_signals(self, signals: Iterable[Signals]) -> int:
        """Partial updates of `signals` in the documents; a service with no document (not listed)
        is skipped, not an error. Returns how many documents were updated."""
        self._ready()
        actions = (
            {
                "_op_type": "update",
                "_index": self._index,
                "_id": row.service_id,
                "doc": {"signals": {name: getattr(row, name) for name in SIGNAL_FIELDS}},
            }
            for row in signals
        )
        with _upstream():
            updated, _missing = helpers.bulk(self._client, actions, stats_only=True, raise_on_error=False)
            self._client.indices.refresh(index=self._index)
        return int(updated)

    def search(self, query: SearchQuery) -> SearchPage:
        self._ready()
        with _upstream():
            response = self._client.search(index=self._index, body=build_search_request(query))
        return parse_search_response(response.body)

    def _ready(self) -> None:
        # Writing to a missing index would create it with a guessed mapping (tags as text, ...).
        if not self._ensured:
            self.ensure_index()


@lru_cache(maxsize=8)
def elasticsearch_index(url: str, index: str) -> ElasticsearchIndex:
    """One client (connection pool) per URL and index for the whole process."""
    client = Elasticsearch(url, request_timeout=10, max_retries=2, retry_on_timeout=True)
    return ElasticsearchIndex(client, index)
