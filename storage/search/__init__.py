"""Discovery search: one interface, two backends chosen by settings (SQL full-text, or Elasticsearch).

Only listed services are ever returned: `active` ones, and `deprecated` ones when asked for.
Whoever changes a service's listing (activation, deprecation, retirement) re-indexes or removes
its document; every search backend filters on the status stored with the document.
"""

from __future__ import annotations

from collections.abc import Iterable
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
    from core.settings import Settings
    from storage.models import Service

MAX_LIMIT = 100
# Deepest row a page may reach: Elasticsearch's default index.max_result_window, and a bound
# on the OFFSET scans the SQL backend does for deep pages.
MAX_WINDOW = 10_000
FACET_SIZE = 20  # buckets per facet, most frequent first


class SortOrder(StrEnum):
    RELEVANCE = "relevance"  # best match first; newest first when there is no text
    NEWEST = "newest"  # most recently published first
    NAME = "name"  # by name, code-point order (the same on every backend)


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


Tag = Annotated[StrictStr, StringConstraints(min_length=1, max_length=64)]


class SearchFilters(CamelModel):
    category: StrictStr | None = Field(default=None, max_length=64)
    pricing_model: StrictStr | None = Field(default=None, max_length=32)
    compliance_level: StrictStr | None = Field(default=None, max_length=32)
    tags: list[Tag] = Field(default_factory=list, max_length=32, description="Every tag must be present.")
    provider_id: StrictStr | None = Field(default=None, max_length=128, alias="provider", description="Provider id.")


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


class FacetBucket(CamelModel):
    value: str
    count: int


class Facets(CamelModel):
    """Counts over everything the query and filters match (not just the page), most frequent first."""

    category: list[FacetBucket] = []
    pricing_model: list[FacetBucket] = []
    compliance_level: list[FacetBucket] = []
    tags: list[FacetBucket] = []


class SearchPage(CamelModel):
    items: list[SearchHit]
    total: int
    facets: Facets


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


class SearchIndex(Protocol):
    def index(self, document: SearchDocumentIn) -> None:
        """Add or replace one service's document."""

    def index_many(self, documents: Iterable[SearchDocumentIn]) -> int:
        """Add or replace many documents (a re-index); returns how many."""

    def remove(self, service_id: str) -> None:
        """Drop a service's document; nothing happens when there is none."""

    def search(self, query: SearchQuery) -> SearchPage:
        """One page of listed services matching the query, with the total and facets."""


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


def document_from_service(service: Service) -> SearchDocumentIn:
    """The search document of a service row (its current version's spec)."""
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
    )
