"""Discovery: full-text search over listed services, with filters, facets and paging. Public."""

from __future__ import annotations

import hashlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from api.body import read_json_object
from api.deps import CacheDep, SearchIndexDep, SettingsDep
from api.errors import ErrorResponse
from api.schemas import Page
from storage.cache import ReadCache
from storage.search import Facets, SearchHit, SearchIndex, SearchPage, SearchQuery

router = APIRouter(prefix="/services", tags=["search"])
log = logging.getLogger("marketplace.search")


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
        "matches the SQL backend scores the 10,000 newest (PostgreSQL: most recently published; SQLite: "
        "most recently added to the index), and every page is a slice of that order.",
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
async def search_services(request: Request, settings: SettingsDep, cache: CacheDep, index: SearchIndexDep) -> Response:
    """Active services (and deprecated ones on request) matching text and filters, with facet counts."""
    body = await read_json_object(request, settings.limits.max_body_bytes)
    # camelCase only, as everywhere in the API; a 422 with a pointer per problem otherwise.
    query = SearchQuery.model_validate(body, by_alias=True, by_name=False)
    answer = await run_in_threadpool(run_search, query, cache, index)
    # The body as it was rendered when the search ran: a cached answer is sent as it is kept,
    # without being parsed, validated and serialized again on every hit.
    return Response(answer, media_type="application/json")


def render(query: SearchQuery, page: SearchPage) -> str:
    """The response body (SearchResults, camelCase) of `page`, the answer to `query`."""
    paging = query.pagination
    results = SearchResults(
        items=page.items,
        total=page.total,
        total_approximate=page.total_approximate,
        offset=paging.offset,
        limit=paging.limit,
        facets=page.facets,
        ranking_approximate=page.ranking_approximate,
        ranked=page.ranked,
    )
    return results.model_dump_json(by_alias=True)


class _InFlight:
    """One search being run for everyone who asked for it meanwhile."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: str | None = None


_in_flight: dict[tuple[str, str], _InFlight] = {}
_in_flight_lock = threading.Lock()
# Expired answers are refreshed here, off the requests that found them: two at a time at most,
# so a moment when many popular answers expire together does not take every database connection.
_refresher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="search-refresh")
_refreshing: set[tuple[str, str]] = set()


def run_search(query: SearchQuery, cache: ReadCache, index: SearchIndex) -> str:
    """The response body for `query`, through the result cache (see storage/cache.py).

    A kept answer is fresh for `search_ttl_seconds`; any change to a service invalidates every
    answer at once (the token moves on), so a change is never answered stale. Past its TTL an
    answer (under the same token: nothing changed but the services' traffic figures) is still
    sent for `search_stale_seconds` while one background refresh runs the search again, so a
    popular query's expiry costs nobody a wait.

    Identical searches that miss at the same time (a popular query just after a change, or the
    first after start-up) are run once in this process; the others wait for that result instead
    of each scanning the same matches. A failed run lets each waiter search for itself.
    """
    key = hashlib.sha256(query.model_dump_json().encode()).hexdigest()
    token = cache.search_token()  # before searching: see storage/cache.py
    kept = cache.get_search(key, token)
    if kept is not None:
        if not kept.fresh:
            _refresh(key, token, query, cache, index)
        return kept.body
    with _in_flight_lock:
        running = _in_flight.get((key, token))
        leader = running is None
        if running is None:
            running = _in_flight[(key, token)] = _InFlight()
    if not leader:
        running.done.wait(timeout=30)
        if running.answer is not None:
            return running.answer
        return render(query, index.search(query))
    try:
        running.answer = _search_and_keep(key, token, query, cache, index)
        return running.answer
    finally:
        with _in_flight_lock:
            del _in_flight[(key, token)]
        running.done.set()


def _search_and_keep(key: str, token: str, query: SearchQuery, cache: ReadCache, index: SearchIndex) -> str:
    answer = render(query, index.search(query))
    cache.put_search(key, token, answer)
    return answer


def _refresh(key: str, token: str, query: SearchQuery, cache: ReadCache, index: SearchIndex) -> None:
    """Run the search again in the background, unless this process already is."""
    with _in_flight_lock:
        if (key, token) in _refreshing:
            return
        _refreshing.add((key, token))

    def refresh() -> None:
        try:
            _search_and_keep(key, token, query, cache, index)
        except Exception:  # the stale answer stays until the window ends; the next request tries again
            log.exception("refreshing a cached search failed")
        finally:
            with _in_flight_lock:
                _refreshing.discard((key, token))

    _refresher.submit(refresh)
