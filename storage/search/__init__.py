"""Discovery search: one interface, two backends chosen by settings (SQL full-text, or Elasticsearch).

Only listed services are ever returned: `active` ones, and `deprecated` ones when asked for.
Whoever changes a service's listing (activation, deprecation, retirement) re-indexes or removes
its document; every search backend filters on the status stored with the document.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core.core_schema import ValidatorFunctionWrapHandler

from core.domain import ServiceStatus
from core.errors import SpecValidationError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.settings import Settings
    from storage.models import Service
    from storage.repositories.service_signals import Signals

MAX_LIMIT = 100
# Deepest row a page may reach: Elasticsearch's default index.max_result_window, and a bound
# on the OFFSET scans the SQL backend does for deep pages.
MAX_WINDOW = 10_000
FACET_SIZE = 20  # buckets per facet, most frequent first


class SortOrder(StrEnum):
    RELEVANCE = "relevance"  # best match first; newest first when there is no text
    NEWEST = "newest"  # most recently published first
    NAME = "name"  # by name, code-point order (the same on every backend)
    # The signals (storage/repositories/service_signals.py) first, then relevance, then newest.
    # A service with no figure for the signal comes after every one that has it.
    POPULARITY = "popularity"  # most calls in the last 30 days first
    AVAILABILITY = "availability"  # highest observed availability first
    LATENCY = "latency"  # lowest observed p95 latency first


SIGNAL_SORTS = (SortOrder.POPULARITY, SortOrder.AVAILABILITY, SortOrder.LATENCY)


@dataclass(frozen=True)
class Bucket:
    """A facet bucket over a numeric signal: `low` <= value < `high` (None: unbounded)."""

    value: str
    low: float | None
    high: float | None


# The bucketed facets over the signals: field -> buckets, in the order they are listed. A service
# with no observation is counted under "unknown"; one with no calls recorded has 0 calls.
SIGNAL_FACETS: dict[str, tuple[str, tuple[Bucket, ...]]] = {
    "popularity": (
        "calls_30d",
        (
            Bucket("0", None, 1),
            Bucket("1-99", 1, 100),
            Bucket("100-999", 100, 1000),
            Bucket("1000-9999", 1000, 10_000),
            Bucket("10000+", 10_000, None),
        ),
    ),
    "availability": (
        "availability",
        (
            Bucket("99.9+", 99.9, None),
            Bucket("99-99.9", 99, 99.9),
            Bucket("95-99", 95, 99),
            Bucket("<95", None, 95),
        ),
    ),
    "latency": (
        "latency_p95_ms",
        (
            Bucket("<250", None, 250),
            Bucket("250-499", 250, 500),
            Bucket("500-999", 500, 1000),
            Bucket("1000-1999", 1000, 2000),
            Bucket("2000+", 2000, None),
        ),
    ),
}
UNKNOWN = "unknown"
SIGNAL_FIELDS = ("calls_30d", "availability", "latency_p50_ms", "latency_p95_ms")


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


Tag = Annotated[StrictStr, StringConstraints(min_length=1, max_length=64)]


class SearchFilters(CamelModel):
    category: StrictStr | None = Field(default=None, max_length=64)
    pricing_model: StrictStr | None = Field(default=None, max_length=32)
    compliance_level: StrictStr | None = Field(default=None, max_length=32)
    tags: list[Tag] = Field(default_factory=list, max_length=32, description="Every tag must be present.")
    provider_id: StrictStr | None = Field(default=None, max_length=128, alias="provider", description="Provider id.")
    min_availability: float | None = Field(
        default=None,
        ge=0,
        le=100,
        strict=True,
        allow_inf_nan=False,
        description="Observed availability (percent) at least this; services never observed are left out.",
    )
    max_latency_ms: float | None = Field(
        default=None,
        gt=0,
        le=600_000,
        strict=True,
        allow_inf_nan=False,
        description="Observed p95 latency (ms) at most this; services never observed are left out.",
    )
    min_calls_30d: StrictInt | None = Field(
        default=None, ge=0, le=2**53, alias="minCalls30d", description="At least this many calls in the last 30 days."
    )


class Pagination(CamelModel):
    offset: StrictInt = Field(default=0, ge=0, le=1_000_000)
    limit: StrictInt = Field(default=20, ge=1, le=MAX_LIMIT)


class SearchQuery(CamelModel):
    """What to look for; built from the API body (camelCase) or in Python (snake_case)."""

    text: StrictStr = Field(default="", max_length=512, alias="query", description="Free text; empty matches all.")
    filters: SearchFilters = Field(default_factory=SearchFilters)
    include_deprecated: StrictBool = False
    pagination: Pagination = Field(default_factory=Pagination)
    sort: SortOrder = SortOrder.RELEVANCE

    @model_validator(mode="wrap")
    @classmethod
    def _domain_errors(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # Every way of building a query (API body, Python call) fails the same way: a 422 whose
        # details point into the request body.
        try:
            query = handler(data)
        except ValidationError as exc:
            details = [{"pointer": pointer(e["loc"]), "message": e["msg"], "code": e["type"]} for e in exc.errors()]
            raise SpecValidationError("search request is invalid", details) from None
        page = query.pagination
        if page.offset + page.limit > MAX_WINDOW:
            message = f"offset + limit must be at most {MAX_WINDOW}; narrow the search instead of paging this deep"
            raise SpecValidationError(
                "search request is invalid", [{"pointer": "/pagination/offset", "message": message}]
            )
        return query

    @property
    def statuses(self) -> tuple[str, ...]:
        """The lifecycle statuses this query may return."""
        if self.include_deprecated:
            return (ServiceStatus.ACTIVE.value, ServiceStatus.DEPRECATED.value)
        return (ServiceStatus.ACTIVE.value,)


def pointer(loc: Iterable[int | str]) -> str:
    """A JSON pointer (RFC 6901) from a pydantic error location."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in loc)


class SearchHit(CamelModel):
    service_id: str
    name: str
    version: str
    description: str
    category: str
    tags: list[str]
    pricing_model: str | None
    compliance_level: str | None
    provider_id: str
    status: str
    published_at: datetime | None
    score: float | None = Field(
        default=None, description="Backend-specific relevance (higher is better); null when no text was searched."
    )
    calls_30d: int = Field(default=0, alias="calls30d", description="Calls through the gateway in the last 30 days.")
    availability: float | None = Field(default=None, description="Observed availability (percent); null: not observed.")
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None


class FacetBucket(CamelModel):
    value: str
    count: int


class Facets(CamelModel):
    """Counts over everything the query and filters match (not just the page), most frequent first."""

    category: list[FacetBucket] = []
    pricing_model: list[FacetBucket] = []
    compliance_level: list[FacetBucket] = []
    tags: list[FacetBucket] = []
    popularity: list[FacetBucket] = Field(default=[], description="Calls in the last 30 days, bucketed.")
    availability: list[FacetBucket] = Field(default=[], description="Observed availability (percent), bucketed.")
    latency: list[FacetBucket] = Field(default=[], description="Observed p95 latency (ms), bucketed.")
    approximate: bool = Field(
        default=False,
        description="True when the counts were estimated from a sample of the matches (see `sampled`), "
        "scaled to the total; false when every match was counted.",
    )
    sampled: int | None = Field(default=None, description="How many matches the estimate was made from.")


class SearchPage(CamelModel):
    items: list[SearchHit]
    total: int
    total_approximate: bool = Field(
        default=False,
        description="True when `total` is an estimate: past 10,000 matches (the deepest a page can reach) "
        "the SQL backend stops counting and extrapolates.",
    )
    facets: Facets
    ranking_approximate: bool = Field(
        default=False,
        description="True when relevance was ranked over part of the matches (see `ranked`): past 10,000 "
        "matches the SQL backend scores the 10,000 newest (PostgreSQL: most recently published; SQLite: "
        "most recently added to the index), and the pages hold the best of those. False when every match "
        "was ranked.",
    )
    ranked: int | None = Field(default=None, description="How many matches relevance was ranked over.")


class Capability(CamelModel):
    name: str
    description: str | None = None


class SearchDocumentIn(CamelModel):
    """What the index holds about one service."""

    service_id: str = Field(max_length=36)
    name: str
    version: str
    description: str
    category: str
    tags: list[str] = []
    provider_id: str
    provider_name: str
    pricing_model: str | None = None
    compliance_level: str | None = None
    certifications: list[str] = []
    capabilities: list[Capability] = []
    status: str
    published_at: datetime | None = None
    # The signals, for a backend that keeps its own copy (Elasticsearch); the SQL one joins the table.
    calls_30d: int = 0
    availability: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None


class SearchIndex(Protocol):
    def index(self, document: SearchDocumentIn) -> None:
        """Add or replace one service's document."""

    def index_many(self, documents: Iterable[SearchDocumentIn]) -> int:
        """Add or replace many documents (a re-index); returns how many."""

    def remove(self, service_id: str) -> None:
        """Drop a service's document; nothing happens when there is none."""

    def search(self, query: SearchQuery) -> SearchPage:
        """One page of listed services matching the query, with the total and facets."""

    def update_signals(self, signals: Iterable[Signals]) -> int:
        """Bring the copy of these services' signals up to date, for a backend that keeps one
        (Elasticsearch); returns how many documents changed. The SQL backend reads the table."""


def get_search_index(settings: Settings | None = None) -> SearchIndex:
    """The backend the settings choose (`search.backend`)."""
    from core.settings import get_settings

    search = (settings or get_settings()).search
    if search.backend == "elasticsearch":
        if not search.elasticsearch_url:
            raise ValueError("search.backend is elasticsearch but MARKETPLACE_SEARCH__ELASTICSEARCH_URL is not set")
        from storage.search.elastic import elasticsearch_index

        return elasticsearch_index(search.elasticsearch_url, search.index)
    from storage.search.sql import SqlSearchIndex

    return SqlSearchIndex()


def document_from_service(service: Service, session: Session | None = None) -> SearchDocumentIn:
    """The search document of a service row (its current version's spec), with its signals read
    through `session`, or the row's own session; a detached row without one gets none."""
    from sqlalchemy.orm import object_session

    from storage.repositories import service_signals

    session = session or object_session(service)
    signals = service_signals.get(session, service.id) if session is not None else None
    figures = {name: getattr(signals, name) for name in SIGNAL_FIELDS} if signals else {}
    spec = service.spec
    pricing = spec.get("pricing") or {}
    compliance = spec.get("compliance") or {}
    return SearchDocumentIn(
        service_id=service.id,
        name=service.name,
        version=service.version,
        description=service.description,
        category=service.category,
        tags=[str(tag) for tag in service.tags],
        provider_id=service.provider_id,
        provider_name=service.provider_name,
        pricing_model=pricing.get("model"),
        compliance_level=compliance.get("level"),
        certifications=list(compliance.get("certifications") or []),
        capabilities=[
            Capability(name=c["name"], description=c.get("description")) for c in spec.get("capabilities") or []
        ],
        status=service.status,
        published_at=service.published_at,
        **figures,
    )
