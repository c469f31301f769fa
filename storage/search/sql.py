"""The SQL search backend over `search_documents`: PostgreSQL full-text search, or SQLite FTS5.

PostgreSQL matches `websearch_to_tsquery('english', text)` against the generated, weighted
`search_vector` (name A > description B > tags C) and ranks with `ts_rank`. SQLite matches the
external-content FTS5 table `search_fts` (porter stemming) with a sanitized query and ranks
with `bm25` weighted the same way. Each method opens, and commits, its own session.

The signals (`service_signals`) are joined when a query filters or sorts by them, read by primary
key for the page's hits, and bucketed in the facets. Broad queries are bounded: the total is
counted up to COUNT_CAP and extrapolated past it, the facets are counted over a sample past
FACET_SAMPLE matches; both say so in the page (`totalApproximate`, `facets.approximate`). On
PostgreSQL, relevance ranks at most RANK_WINDOW matches, the newest (`rankingApproximate`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any
from typing import cast as typed

from sqlalchemy import (
    ColumnElement,
    Executable,
    FromClause,
    Select,
    Table,
    and_,
    case,
    cast,
    column,
    delete,
    exists,
    func,
    literal,
    literal_column,
    null,
    select,
    table,
    text,
    true,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ClauseElement, ColumnClause

from storage.database import mark_services_changed, read_scope, session_scope
from storage.models import SearchDocument, ServiceSignal, utcnow
from storage.repositories import service_signals
from storage.search import (
    FACET_SIZE,
    MAX_WINDOW,
    SIGNAL_FACETS,
    SIGNAL_SORTS,
    UNKNOWN,
    FacetBucket,
    Facets,
    SearchDocumentIn,
    SearchFilters,
    SearchHit,
    SearchPage,
    SearchQuery,
    SortOrder,
)
from storage.search.terms import fts5_query, search_terms

TABLE = typed(Table, SearchDocument.__table__)
SIGNALS = typed(Table, ServiceSignal.__table__)
CALLS = func.coalesce(SIGNALS.c.calls_30d, 0)  # no row: no calls recorded
SIGNAL_COLUMNS = ("calls_30d", "availability", "latency_p50_ms", "latency_p95_ms")
# Facets are counted exactly over at most this many matches; past it they are estimated from the
# first FACET_SAMPLE matches the database reaches and scaled to the total (`facets.approximate`).
# Counting every one of 76,000 matches (three facets, ~3 tags each, the signals) was most of a
# broad query's time at 100,000 services (bench/RESULTS.md).
FACET_SAMPLE = 2_000
# Matches are counted one by one up to COUNT_CAP, the deepest row a page can reach (MAX_WINDOW);
# past it the total is extrapolated from where in the table the scan had got to when it found
# the COUNT_CAP-th match (`totalApproximate`). An exact count of 76,000 matches cost 25-60 ms of
# a broad query's time at 100,000 services.
COUNT_CAP = MAX_WINDOW
# Relevance (the default order of a text search) is ranked over at most this many matches: the
# newest ones (`_window_order`). Past it the pages hold those best first, then the other matches
# in the window's order (`rankingApproximate`), one order that every page is a slice of. Scoring
# all 76,000 matches of a common word was most of a broad query's time at 100,000 services on
# both backends (bench/RESULTS.md). None: rank every match.
RANK_WINDOW: int | None = MAX_WINDOW
# Where the window applies (both SQL backends; tests narrow it).
WINDOWED_DIALECTS = frozenset({"postgresql", "sqlite"})
# Neither is mapped: PostgreSQL's generated tsvector column, SQLite's FTS5 table (same rowids).
PG_VECTOR = literal_column("search_documents.search_vector", type_=postgresql.TSVECTOR)
FTS = table("search_fts", column("rowid"))
FTS_TABLE: ColumnClause[Any] = literal_column("search_fts")
DOC_ROWID: ColumnClause[Any] = literal_column("search_documents.rowid")
BM25 = func.bm25(FTS_TABLE, literal_column("10.0"), literal_column("5.0"), literal_column("1.0"))
HIT_COLUMNS = [
    TABLE.c[name]
    for name in (
        "service_id",
        "name",
        "version",
        "description",
        "category",
        "tags",
        "pricing_model",
        "compliance_level",
        "provider_id",
        "status",
        "published_at",
    )
]
FACET_COLUMNS = ("category", "pricing_model", "compliance_level")
NEWEST: list[Any] = [TABLE.c.published_at.desc().nulls_last(), TABLE.c.service_id]  # ties: by id
Rows = Select[tuple[Any, ...]]  # a SELECT of any columns
EXTRA_FIELDS = {"provider_name", "certifications", "capabilities"}
SEARCH_SETTINGS = text(
    "SELECT set_config('max_parallel_workers_per_gather', '0', true), "
    "set_config('plan_cache_mode', 'force_custom_plan', true)"
)  # for the search's transaction only (PostgreSQL)
BATCH = 1000  # rows per INSERT statement (both drivers turn one into a multi-row VALUES)


@dataclass(frozen=True)
class _Plan:
    """Where the matching rows come from, what they must satisfy, and their relevance (None: no text)."""

    source: FromClause  # joined with the signals when the query filters or sorts by them
    where: list[ColumnElement[bool]]
    score: ColumnElement[Any] | None
    tsquery: ColumnElement[Any] | None = None  # PostgreSQL: what `score` ranks the vector against


class SqlSearchIndex:
    """Search over the marketplace database (the embedded default; PostgreSQL in production)."""

    def index(self, document: SearchDocumentIn) -> None:
        self.index_many([document])

    def index_many(self, documents: Iterable[SearchDocumentIn]) -> int:
        count = 0
        remaining = iter(documents)
        with session_scope() as session:
            statement = _upsert(_dialect(session))
            while batch := [_row(document) for document in islice(remaining, BATCH)]:
                session.execute(statement, batch)
                mark_services_changed(session, (row["service_id"] for row in batch))
                count += len(batch)
        return count

    def remove(self, service_id: str) -> None:
        with session_scope() as session:
            result = session.execute(delete(TABLE).where(TABLE.c.service_id == service_id))
            if getattr(result, "rowcount", 0):
                mark_services_changed(session, [service_id])

    def search(self, query: SearchQuery) -> SearchPage:
        with read_scope() as session:  # on SQLite: side by side with other searches and writers
            dialect = _dialect(session)
            if dialect == "postgresql":
                # One core per search: parallel workers made a broad query no faster on two busy
                # cores, and tripled its CPU (three processes scanning) when searches run side by side.
                # A plan for these very words each time: psycopg prepares a statement run 5 times on
                # a connection, and PostgreSQL's generic plan for it then knows neither how common
                # the words are (it expected 85 of 15,000 matches) nor the tsquery itself, which it
                # rebuilt for every row it checked and scored (28.8 ms against 16.2 ms at 20,000).
                session.execute(SEARCH_SETTINGS)
            plan = _plan(query, dialect)
            total, exact = _total(session, plan, dialect)
            ranked = query.sort is SortOrder.RELEVANCE and plan.score is not None and dialect in WINDOWED_DIALECTS
            # No more matches than the window: all ranked, exactly, without first looking for the
            # window's edge (a second pass over every match and its filters).
            window = RANK_WINDOW if ranked and RANK_WINDOW is not None and total > RANK_WINDOW else None
            if window is None:
                rows = list(session.execute(_page(plan, query, dialect)).all())
            else:
                rows = _ranked_rows(session, plan, query, dialect, window)
            # The page's figures by primary key: joining the signals to every match only to
            # show twenty would cost a broad query a join of all its matches.
            signals = service_signals.get_many(session, [row.service_id for row in rows])
            facets = _facets(session, plan, dialect, total)
        items = [_hit(row._mapping, signals.get(row.service_id)) for row in rows]
        # The total is exact up to COUNT_CAP (>= RANK_WINDOW) and never below what was counted.
        windowed = window is not None and total > window
        return SearchPage(
            items=items,
            total=total,
            total_approximate=not exact,
            facets=facets,
            ranking_approximate=windowed,
            ranked=window if windowed else None,
        )

    def update_signals(self, signals: Iterable[service_signals.Signals]) -> int:
        """Nothing to do: searches read `service_signals` itself."""
        return 0


def _hit(row: Any, signals: service_signals.Signals | None) -> SearchHit:
    figures = {name: getattr(signals, name) for name in SIGNAL_COLUMNS} if signals else {}
    return SearchHit.model_validate({**row, "tags": list(row["tags"]), **figures})


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _row(document: SearchDocumentIn) -> dict[str, Any]:
    return {
        "service_id": document.service_id,
        "name": document.name,
        "description": document.description,
        "tags_text": " ".join(document.tags),
        "tags": list(document.tags),
        "category": document.category,
        "pricing_model": document.pricing_model,
        "compliance_level": document.compliance_level,
        "provider_id": document.provider_id,
        "status": document.status,
        "version": document.version,
        "published_at": document.published_at,
        "indexed_at": utcnow(),
        # Only what no column holds: a full copy would double the row width, and every broad search
        # and facet count scans these rows (measured: 133 MB -> 83 MB, scans ~40% faster at 100k).
        "document": document.model_dump(mode="json", include=EXTRA_FIELDS),
    }


def _upsert(dialect: str) -> Executable:
    # ON CONFLICT DO UPDATE (not REPLACE): on SQLite an update keeps the rowid, and its trigger
    # re-indexes the FTS row; REPLACE would delete without firing the delete trigger.
    insert = postgresql.insert(TABLE) if dialect == "postgresql" else sqlite.insert(TABLE)
    updates = {c.name: insert.excluded[c.name] for c in TABLE.columns if not c.primary_key}
    return insert.on_conflict_do_update(index_elements=[TABLE.c.service_id], set_=updates)


def _plan(query: SearchQuery, dialect: str) -> _Plan:
    where = [TABLE.c.status.in_(query.statuses), *_filters(query.filters, dialect)]
    signal_filters = _signal_filters(query.filters)
    source: FromClause = TABLE
    if signal_filters or query.sort in SIGNAL_SORTS:
        source = TABLE.outerjoin(SIGNALS, SIGNALS.c.service_id == TABLE.c.service_id)
        where += signal_filters
    terms = search_terms(query.text)
    if not terms:  # empty, punctuation or stop words only: everything listed matches
        return _Plan(source, where, None)
    if dialect == "postgresql":
        # PostgreSQL text cannot hold NUL; websearch_to_tsquery accepts anything else as typed.
        tsquery = func.websearch_to_tsquery(literal_column("'english'"), query.text.replace("\x00", " "))
        matches = PG_VECTOR.op("@@", is_comparison=True)(tsquery)
        return _Plan(source, [*where, matches], func.ts_rank(PG_VECTOR, tsquery), tsquery)
    matches = FTS_TABLE.op("MATCH", is_comparison=True)(fts5_query(terms))
    # bm25 is lower-is-better; negated so that every backend's score is higher-is-better.
    return _Plan(source.join(FTS, FTS.c.rowid == DOC_ROWID), [*where, matches], -BM25)


def _signal_filters(filters: SearchFilters) -> list[ColumnElement[bool]]:
    # A service never observed has no availability or latency: it passes no bound on them.
    where: list[ColumnElement[bool]] = []
    if filters.min_availability is not None:
        where.append(SIGNALS.c.availability >= filters.min_availability)
    if filters.max_latency_ms is not None:
        where.append(SIGNALS.c.latency_p95_ms <= filters.max_latency_ms)
    if filters.min_calls_30d is not None:
        where.append(filters.min_calls_30d <= CALLS)
    return where


def _filters(filters: SearchFilters, dialect: str) -> list[ColumnElement[bool]]:
    wanted = {
        "category": filters.category,
        "pricing_model": filters.pricing_model,
        "compliance_level": filters.compliance_level,
        "provider_id": filters.provider_id,
    }
    where = [TABLE.c[name] == value for name, value in wanted.items() if value is not None]
    if filters.tags:
        where.append(_has_all_tags(filters.tags, dialect))
    return where


def _has_all_tags(tags: list[str], dialect: str) -> ColumnElement[bool]:
    if dialect == "postgresql":
        # The column is json, which has no containment operator; jsonb's @> tests every tag at once.
        return cast(TABLE.c.tags, postgresql.JSONB).contains(tags)
    clauses = []
    for tag in tags:
        element = func.json_each(TABLE.c.tags).table_valued("value")
        clauses.append(exists(select(1).select_from(element).where(element.c.value == tag)))
    return and_(*clauses)


def _page(plan: _Plan, query: SearchQuery, dialect: str) -> Rows:
    score = (plan.score if plan.score is not None else null()).label("score")
    newest: list[Any] = [TABLE.c.published_at.desc().nulls_last(), TABLE.c.service_id]
    order: list[Any]
    if query.sort is SortOrder.NAME:
        # Code-point order, as SQLite's BINARY collation and Elasticsearch's keyword sort do.
        order = [TABLE.c.name.collate("C") if dialect == "postgresql" else TABLE.c.name, TABLE.c.service_id]
    elif query.sort is SortOrder.RELEVANCE and plan.score is not None:
        order = [score.desc(), *newest]
    elif query.sort in SIGNAL_SORTS:
        relevance = [score.desc()] if plan.score is not None else []
        order = [*_signal_order(query.sort), *relevance, *newest]
    else:
        order = newest
    page = query.pagination
    statement = select(*HIT_COLUMNS, score).select_from(plan.source).where(*plan.where)
    return statement.order_by(*order).offset(page.offset).limit(page.limit)


def _ranked_rows(session: Session, plan: _Plan, query: SearchQuery, dialect: str, window: int) -> list[Any]:
    """A page of the relevance order over a window: its `window` newest matches best first, then the rest.

    The rest (pages past the window, when it is smaller than the deepest page) come newest first:
    they are the matches after the window in the very order the window was taken in, so every page
    is a slice of one order.
    """
    page = query.pagination
    end = page.offset + page.limit
    rows: list[Any] = []
    if page.offset < window:
        rows += session.execute(_ranked_page(plan, dialect, window, page.offset, min(end, window) - page.offset))
    if end > window:
        assert plan.score is not None
        start = max(page.offset, window)
        rest = select(*HIT_COLUMNS, plan.score.label("score")).select_from(plan.source).where(*plan.where)
        rows += session.execute(rest.order_by(*_window_order(dialect)).offset(start).limit(end - start))
    return rows


def _ranked_page(plan: _Plan, dialect: str, window: int, offset: int, limit: int) -> Rows:
    """Rows [offset, offset + limit) by relevance, the matches ranked being the `window` newest ones.

    Those are found first (from the newest-first index, stopping at `window`, when a broad query's
    matches are dense there) and only they are scored; a query with fewer matches ranks them all,
    exactly. Ties, as in every relevance order, go to the newest.
    """
    newest = NEWEST
    if dialect == "postgresql":
        # The window is a list of row addresses (narrow rows to sort when the newest-first index is
        # not the cheapest way in), whose rows are then read by address and scored.
        assert plan.tsquery is not None
        ctid: ColumnClause[Any] = literal_column("search_documents.ctid")
        window_rows = select(ctid).select_from(plan.source).where(*plan.where).order_by(*newest).limit(window)
        in_window = ctid == func.any(func.array(window_rows.correlate(None).scalar_subquery()))
        score = func.ts_rank(PG_VECTOR, plan.tsquery).label("score")
        statement = select(*HIT_COLUMNS, score).select_from(TABLE).where(in_window)
        return statement.order_by(score.desc(), *newest).offset(offset).limit(limit)
    # SQLite: the window is the matches added to the index last (the highest rowids, which FTS5
    # reads from its doclists backwards, no sort). Its lowest rowid then bounds the full-text pass
    # itself (FTS5 seeks its doclists to it), so bm25 is computed for the window's rows only: 88 ->
    # 18 ms for 76,000 matches. With fewer matches than the window there is no bound.
    assert plan.score is not None
    in_order = select(FTS.c.rowid).select_from(plan.source).where(*plan.where).order_by(*_window_order(dialect))
    floor = func.coalesce(in_order.offset(window - 1).limit(1).correlate(None).scalar_subquery(), 0)
    score = plan.score.label("score")
    statement = select(*HIT_COLUMNS, score).select_from(plan.source).where(*plan.where, FTS.c.rowid >= floor)
    return statement.order_by(score.desc(), *newest).offset(offset).limit(limit)


def _window_order(dialect: str) -> list[Any]:
    """The order the rank window is taken in, and pages past it continue in: newest first.

    PostgreSQL: by publication (the newest-first index). SQLite: by when the service was added
    to the index (its rowid; an update keeps it), which is about when it was first listed.
    """
    return [FTS.c.rowid.desc()] if dialect == "sqlite" else NEWEST


def _signal_order(sort: SortOrder) -> list[Any]:
    # Unknown figures last on both databases (SQLite puts NULLs first in ascending order).
    if sort is SortOrder.POPULARITY:
        return [CALLS.desc()]
    if sort is SortOrder.AVAILABILITY:
        return [SIGNALS.c.availability.is_(None), SIGNALS.c.availability.desc()]
    return [SIGNALS.c.latency_p95_ms.is_(None), SIGNALS.c.latency_p95_ms.asc()]


def _total(session: Session, plan: _Plan, dialect: str) -> tuple[int, bool]:
    """How many rows match, and whether that is exact (it is up to COUNT_CAP)."""
    # Where each match lies in the table: SQLite's rowid, PostgreSQL's block (the ctid's first part).
    if dialect == "postgresql":
        position: ColumnElement[Any] = literal_column("(search_documents.ctid::text::point)[0]")
        size = text("SELECT pg_relation_size('search_documents') / current_setting('block_size')::int")
    else:
        position, size = DOC_ROWID, text("SELECT max(rowid) FROM search_documents")
    first = select(position.label("position")).select_from(plan.source).where(*plan.where)
    counted = first.limit(COUNT_CAP + 1).subquery()
    found, furthest = session.execute(select(func.count(), func.max(counted.c.position))).one()
    if found <= COUNT_CAP:
        return int(found), True
    # Scans (full-text, sequential, bitmap) meet rows in table order, so the first COUNT_CAP matches
    # came from the first `furthest` positions; the rest of the table is taken to match as densely.
    # An index read in another order (newest first) reaches far positions early and so estimates
    # low; never lower than what was counted.
    extent = session.execute(size).scalar() or 0
    estimate = round(found * (extent + 1) / (furthest + 1)) if furthest is not None else found
    if dialect == "postgresql":
        # The planner's own estimate (column statistics, including the tsvector's most common
        # lexemes) is good where the scan order is not the table's.
        estimate = max(
            estimate, _planned_rows(session, select(func.count()).select_from(plan.source).where(*plan.where))
        )
    return max(int(found), estimate), False


def _planned_rows(session: Session, statement: Rows) -> int:
    """The rows PostgreSQL's planner expects the aggregate's input to have (EXPLAIN, nothing run)."""
    [[plan]] = session.execute(_Explain(statement)).all()
    top = plan[0]["Plan"]
    return int(top["Plans"][0]["Plan Rows"]) if top.get("Plans") else int(top["Plan Rows"])


class _Explain(Executable, ClauseElement):
    """`EXPLAIN (FORMAT JSON)` of a statement, its parameters bound as the statement's own are."""

    inherit_cache = False

    def __init__(self, statement: Rows) -> None:
        self.statement = statement


@compiles(_Explain, "postgresql")
def _compile_explain(element: _Explain, compiler: Any, **kw: Any) -> str:
    return "EXPLAIN (FORMAT JSON) " + str(compiler.process(element.statement, **kw))


def _facets(session: Session, plan: _Plan, dialect: str, total: int) -> Facets:
    """Every facet's buckets: exact up to FACET_SAMPLE matches, estimated past it."""
    sampled = total > FACET_SAMPLE
    columns = [TABLE.c[name] for name in ("service_id", *FACET_COLUMNS, "tags")]
    rows = select(*columns).select_from(plan.source).where(*plan.where)
    if sampled:
        # The first matches the scan reaches (no ORDER BY: a sort would visit every match again).
        # Rows are stored as they were indexed, which says nothing of their category, tags or use.
        rows = rows.limit(FACET_SAMPLE)
    found = rows.subquery("found")
    with_signals = found.outerjoin(SIGNALS, SIGNALS.c.service_id == found.c.service_id)
    signal_values = [SIGNALS.c[name] for name in SIGNAL_COLUMNS]
    matched = select(found, *signal_values).select_from(with_signals).cte("matched")
    branches = [_top(name, matched.c[name], matched) for name in FACET_COLUMNS]
    if dialect == "postgresql":
        tag = func.json_array_elements_text(matched.c.tags).table_valued("value").render_derived()
    else:
        tag = func.json_each(matched.c.tags).table_valued("value")
    branches.append(_top("tags", tag.c.value, matched.join(tag, true())))
    for facet, (name, buckets) in SIGNAL_FACETS.items():
        value = func.coalesce(matched.c[name], 0) if name == "calls_30d" else matched.c[name]
        bucket = case(*[(_within(value, b.low, b.high), b.value) for b in buckets], else_=literal(UNKNOWN))
        branches.append(select(literal(facet), bucket, func.count()).select_from(matched).group_by(bucket))
    scale = total / FACET_SAMPLE if sampled else 1.0
    counted: dict[str, dict[str, int]] = {name: {} for name in (*FACET_COLUMNS, "tags", *SIGNAL_FACETS)}
    for facet, value, count in session.execute(union_all(*branches)):
        counted[facet][str(value)] = round(int(count) * scale)
    listed: dict[str, list[FacetBucket]] = {}
    for facet, counts in counted.items():
        if facet in SIGNAL_FACETS:  # in the order of their ranges, unknown last
            order = [b.value for b in SIGNAL_FACETS[facet][1]] + [UNKNOWN]
            listed[facet] = [FacetBucket(value=v, count=counts[v]) for v in order if counts.get(v)]
        else:  # most frequent first (UNION ALL keeps no order)
            ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
            listed[facet] = [FacetBucket(value=v, count=n) for v, n in ranked]
    sample = FACET_SAMPLE if sampled else None
    return Facets(**listed, approximate=sampled, sampled=sample)


def _within(value: ColumnElement[Any], low: float | None, high: float | None) -> ColumnElement[bool]:
    bounds = [value >= low] if low is not None else []
    bounds += [value < high] if high is not None else []
    return and_(value.is_not(None), *bounds)


def _top(facet: str, value: ColumnElement[Any], source: FromClause) -> Rows:
    count = func.count()
    top = (
        select(literal(facet).label("facet"), value.label("value"), count.label("n"))
        .select_from(source)
        .where(value.is_not(None))
        .group_by(value)
        .order_by(count.desc(), value)
        .limit(FACET_SIZE)
        .subquery()
    )
    return select(top.c.facet, top.c.value, top.c.n)
