"""Discovery: full-text search over listed services, with filters, facets and paging. Public."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from api.body import read_json_object
from api.deps import CacheDep, SearchIndexDep, SettingsDep
from api.errors import ErrorResponse
from api.schemas import Page
from storage.cache import ReadCache
from storage.search import Facets, SearchHit, SearchIndex, SearchPage, SearchQuery

router = APIRouter(prefix="/services", tags=["search"])


class SearchResults(Page[SearchHit]):
    """The page (best match, or the requested order, first) in the list envelope, with facet counts beside it."""

    total_approximate: bool = Field(
        default=False,
        description="True when `total` is an estimate (more than 10,000 matches on the SQL backend); "
        "`facets.approximate` says the same of the facet counts.",
    )
    facets: Facets = Field(description="Counts over everything the query and filters match, not just this page.")
    ranking_approximate: bool = Field(
        default=False,
        description="True when relevance was ranked over part of the matches (see `ranked`): past 10,000 "
        "matches PostgreSQL scores the 10,000 most recently published ones, and every page is a slice "
        "of that order.",
    )
    ranked: int | None = Field(default=None, description="How many matches relevance was ranked over.")


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """The request schema with its `$defs` inlined: an OpenAPI requestBody cannot point into them."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


SEARCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _inline_refs(SearchQuery.model_json_schema(by_alias=True))}},
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (413, 415, 422, 503)}


@router.post(
    "/search",
    response_model=SearchResults,
    responses=ERRORS,
    openapi_extra=SEARCH_BODY,
    summary="Search services",
)
async def search_services(
    request: Request, settings: SettingsDep, cache: CacheDep, index: SearchIndexDep
) -> SearchResults:
    """Active services (and deprecated ones on request) matching text and filters, with facet counts."""
    body = await read_json_object(request, settings.limits.max_body_bytes)
    # camelCase only, as everywhere in the API; a 422 with a pointer per problem otherwise.
    query = SearchQuery.model_validate(body, by_alias=True, by_name=False)
    page = await run_in_threadpool(run_search, query, cache, index)
    paging = query.pagination
    return SearchResults(
        items=page.items,
        total=page.total,
        total_approximate=page.total_approximate,
        offset=paging.offset,
        limit=paging.limit,
        facets=page.facets,
        ranking_approximate=page.ranking_approximate,
        ranked=page.ranked,
    )


class _InFlight:
    """One search being run for everyone who asked for it meanwhile."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.page: SearchPage | None = None


_in_flight: dict[tuple[str, str], _InFlight] = {}
_in_flight_lock = threading.Lock()


def run_search(query: SearchQuery, cache: ReadCache, index: SearchIndex) -> SearchPage:
    """Search through the result cache (30 s TTL; any change to a service invalidates every entry).

    Identical searches that miss the cache at the same time (a popular query just after a change
    or at expiry) are run once in this process; the others wait for that result instead of each
    scanning the same matches. A failed run lets each waiter search for itself.
    """
    key = hashlib.sha256(query.model_dump_json().encode()).hexdigest()
    token = cache.search_token()  # before searching: see storage/cache.py
    cached = cache.get_search(key, token)
    if cached is not None:
        return SearchPage.model_validate(cached)
    with _in_flight_lock:
        running = _in_flight.get((key, token))
        leader = running is None
        if running is None:
            running = _in_flight[(key, token)] = _InFlight()
    if not leader:
        running.done.wait(timeout=30)
        if running.page is not None:
            return running.page
        return index.search(query)
    try:
        page = index.search(query)
        cache.put_search(key, token, page.model_dump(mode="json"))
        running.page = page
        return page
    finally:
        with _in_flight_lock:
            del _in_flight[(key, token)]
        running.done.set()
