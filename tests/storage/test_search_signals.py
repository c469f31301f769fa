"""Service signals (calls in 30 days, observed availability and latency) and what search does with
them, on SQLite and PostgreSQL: the repository's upsert and refresh, ranking, filters, facets, the
estimated facets of broad queries, and the errors of bad requests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from storage.database import session_scope
from storage.models import ServiceSignal
from storage.repositories import service_signals, services, usage
from storage.repositories.services import Actor
from storage.search import SearchIndex, SearchPage, SearchQuery, document_from_service, get_search_index
from storage.search import sql as sql_backend
from tests.support.specs import make_spec

PROVIDER = Actor("acme", "provider")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture
def index(database_url: str) -> SearchIndex:
    return get_search_index()


def listed(index: SearchIndex, name: str, *, description: str = "A chat service", days: int = 0, **spec: Any) -> str:
    with session_scope() as session:
        service = services.create_submitted(session, make_spec(name=name, description=description, **spec), PROVIDER)
        service.status = "active"
        service.published_at = T0 + timedelta(days=days)
        session.flush()
        document = document_from_service(service)
    index.index(document)
    return service.id


def signals(service_id: str, **figures: Any) -> None:
    with session_scope() as session:
        service_signals.upsert(session, service_id, **figures)


def names(page: SearchPage) -> list[str]:
    return [hit.name for hit in page.items]


def search(index: SearchIndex, text: str = "", **query: Any) -> SearchPage:
    return index.search(SearchQuery(text=text, **query))


def calls(service_id: str, count: int, at: datetime) -> None:
    """`count` usage records of the service at `at`."""
    rows = [
        {
            "request_id": uuid.uuid4().hex,
            "occurred_at": at,
            "consumer_id": "c1",
            "key_id": "k1",
            "service_id": service_id,
            "service_version": "1.0.0",
            "subscription_id": None,
            "route": "chat",
            "status": 200,
            "latency_ms": 12.5,
            "ttfb_ms": None,
            "input_tokens": 1,
            "output_tokens": 1,
            "cost": Decimal("0.01"),
            "currency": "USD",
            "stream": False,
            "error": None,
        }
        for _ in range(count)
    ]
    with session_scope() as session:
        usage.ensure_partitions(session, [at])
        usage.insert_records(session, rows)


# --- the repository --------------------------------------------------------------------------


def test_upsert_writes_only_the_figures_given_so_writers_do_not_erase_each_other(index: SearchIndex) -> None:
    service = listed(index, "svc")
    signals(service, availability=99.5, latency_p50_ms=100.0, latency_p95_ms=300.0)
    signals(service, calls_30d=42)
    with session_scope() as session:
        row = service_signals.get(session, service)
    assert row is not None
    assert (row.calls_30d, row.availability, row.latency_p50_ms, row.latency_p95_ms) == (42, 99.5, 100.0, 300.0)
    signals(service, availability=None)  # no longer known
    with session_scope() as session:
        row = service_signals.get(session, service)
    assert row is not None and (row.calls_30d, row.availability) == (42, None)


@pytest.mark.parametrize(
    ("figures", "message"),
    [
        ({"availability": 100.1}, "percentage"),
        ({"availability": float("nan")}, "finite"),
        ({"latency_p95_ms": -1}, ">= 0"),
        ({"calls_30d": -3}, "whole number"),
        ({"calls_30d": 1.5}, "whole number"),
        ({"calls_30d": None}, "cannot be null"),
        ({"availability": "high"}, "finite number"),
        ({"uptime": 99}, "unknown signal"),
        ({}, "nothing to record"),
    ],
)
def test_bad_figures_are_refused_and_nothing_is_written(
    index: SearchIndex, figures: dict[str, Any], message: str
) -> None:
    service = listed(index, "svc")
    with pytest.raises(ValueError, match=message), session_scope() as session:
        service_signals.upsert(session, service, **figures)
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(ServiceSignal)) == 0


def test_refresh_counts_the_last_30_days_and_a_rerun_changes_nothing(index: SearchIndex) -> None:
    busy, quiet, gone = listed(index, "busy"), listed(index, "quiet"), listed(index, "gone")
    calls(busy, 3, NOW - timedelta(days=1))
    calls(busy, 2, NOW - timedelta(days=29, hours=23))  # inside the window
    calls(busy, 4, NOW - timedelta(days=30, seconds=1))  # just outside it
    calls(quiet, 1, NOW - timedelta(days=40))
    calls(gone, 1, NOW - timedelta(days=2))
    calls("no-such-service", 5, NOW - timedelta(days=1))  # usage records have no foreign key
    signals(quiet, calls_30d=9, availability=98.0)  # a stale count, and the health flow's figure
    with session_scope() as session:
        changed = service_signals.refresh_calls(session, NOW)
    assert sorted(changed) == sorted([busy, quiet, gone])
    with session_scope() as session:
        rows = service_signals.get_many(session, [busy, quiet, gone, "no-such-service"])
    assert {sid: row.calls_30d for sid, row in rows.items()} == {busy: 5, quiet: 0, gone: 1}
    assert rows[quiet].availability == 98.0  # the refresh writes calls only
    with session_scope() as session:
        assert service_signals.refresh_calls(session, NOW) == []  # idempotent
    # A month later the calls have aged out.
    with session_scope() as session:
        assert sorted(service_signals.refresh_calls(session, NOW + timedelta(days=31))) == sorted([busy, gone])
        assert {r.calls_30d for r in service_signals.get_many(session, [busy, quiet, gone]).values()} == {0}


def test_a_document_carries_the_signals_for_a_backend_that_copies_them(index: SearchIndex) -> None:
    service_id = listed(index, "svc")
    signals(service_id, calls_30d=7, availability=99.9, latency_p50_ms=50.0, latency_p95_ms=90.0)
    with session_scope() as session:
        service = services.get(session, service_id)
        document = document_from_service(service)
        session.expunge(service)
        detached = document_from_service(service, session)  # a detached row, read through a session
    figures = (document.calls_30d, document.availability, document.latency_p50_ms, document.latency_p95_ms)
    assert figures == (7, 99.9, 50.0, 90.0)
    assert detached.calls_30d == 7
    assert document_from_service(service).calls_30d == 0  # detached and no session: none


# --- ranking ---------------------------------------------------------------------------------


def test_sort_by_popularity_then_relevance_and_unknown_last(index: SearchIndex) -> None:
    little = listed(index, "little", description="chat")
    busy = listed(index, "busy", description="chat")
    listed(index, "never", description="chat")  # no signals row at all: 0 calls
    tie_name = listed(index, "chat-tie", description="chat")  # same calls as `little`, better match
    signals(little, calls_30d=5)
    signals(busy, calls_30d=500)
    signals(tie_name, calls_30d=5)
    page = search(index, "chat", sort="popularity")
    assert names(page) == ["busy", "chat-tie", "little", "never"]
    assert [hit.calls_30d for hit in page.items] == [500, 5, 5, 0]
    assert all(hit.score is not None for hit in page.items)  # relevance is still reported


def test_sort_by_availability_and_by_latency_puts_the_unobserved_last(index: SearchIndex) -> None:
    ids = {name: listed(index, name, days=day) for day, name in enumerate(["a", "b", "c", "unseen"])}
    signals(ids["a"], availability=99.0, latency_p95_ms=800.0)
    signals(ids["b"], availability=99.99, latency_p95_ms=120.0)
    signals(ids["c"], availability=95.5, latency_p95_ms=400.0)
    assert names(search(index, sort="availability")) == ["b", "a", "c", "unseen"]
    assert names(search(index, sort="latency")) == ["b", "c", "a", "unseen"]
    hit = search(index, sort="latency").items[0]
    assert (hit.availability, hit.latency_p95_ms) == (99.99, 120.0)


# --- filters ---------------------------------------------------------------------------------


def test_signal_filters_and_their_combination_with_text_and_other_filters(index: SearchIndex) -> None:
    ids = {name: listed(index, name, category=cat) for name, cat in [("a", "chat"), ("b", "chat"), ("c", "other")]}
    listed(index, "unseen", category="chat")
    signals(ids["a"], calls_30d=10, availability=99.95, latency_p95_ms=200.0)
    signals(ids["b"], calls_30d=1000, availability=99.0, latency_p95_ms=900.0)
    signals(ids["c"], calls_30d=0, availability=99.99, latency_p95_ms=100.0)

    def filtered(**filters: Any) -> list[str]:
        return sorted(names(search(index, filters=filters)))

    assert filtered(min_availability=99.5) == ["a", "c"]  # the unobserved service passes no bound
    assert filtered(min_availability=99.0) == ["a", "b", "c"]  # the bound is inclusive
    assert filtered(max_latency_ms=200) == ["a", "c"]
    assert filtered(min_calls_30d=10) == ["a", "b"]
    assert filtered(min_calls_30d=0) == ["a", "b", "c", "unseen"]  # no row: 0 calls, still >= 0
    assert filtered(min_availability=99.5, max_latency_ms=150, category="other") == ["c"]
    assert filtered(min_availability=99.5, category="chat") == ["a"]
    assert search(index, "chat", filters={"min_calls_30d": 11}).total == 1


# --- facets ----------------------------------------------------------------------------------


def test_signal_facets_are_bucketed_in_range_order_with_unknown_last(index: SearchIndex) -> None:
    figures = [
        (0, 99.95, 100.0),
        (50, 99.9, 249.9),
        (150, 99.5, 250.0),
        (20_000, 94.0, 2500.0),
    ]
    for n, (count, availability, p95) in enumerate(figures):
        signals(listed(index, f"s{n}"), calls_30d=count, availability=availability, latency_p95_ms=p95)
    listed(index, "unseen")
    facets = search(index).facets
    assert [(b.value, b.count) for b in facets.popularity] == [("0", 2), ("1-99", 1), ("100-999", 1), ("10000+", 1)]
    assert [(b.value, b.count) for b in facets.availability] == [
        ("99.9+", 2),  # 99.9 is in 99.9+: lower bounds are inclusive
        ("99-99.9", 1),
        ("<95", 1),
        ("unknown", 1),
    ]
    assert [(b.value, b.count) for b in facets.latency] == [("<250", 2), ("250-499", 1), ("2000+", 1), ("unknown", 1)]
    assert (facets.approximate, facets.sampled) == (False, None)
    # The facets count what the filters leave.
    narrowed = search(index, filters={"min_availability": 99.9}).facets
    assert [(b.value, b.count) for b in narrowed.availability] == [("99.9+", 2)]


def test_broad_queries_estimate_their_facets_from_a_sample_and_say_so(
    index: SearchIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(12):
        service = listed(index, f"s{n}", category="chat" if n % 3 else "embeddings", tags=["eu"])
        signals(service, calls_30d=n)
    exact = search(index, "chat")
    monkeypatch.setattr(sql_backend, "FACET_SAMPLE", 6)
    estimated = search(index, "chat")
    assert estimated.total == exact.total == 12  # the total is always exact
    assert (estimated.facets.approximate, estimated.facets.sampled) == (True, 6)
    assert (exact.facets.approximate, exact.facets.sampled) == (False, None)
    assert [(b.value, b.count) for b in exact.facets.category] == [("chat", 8), ("embeddings", 4)]
    # Six of twelve counted, each count doubled: the estimates add up to the total.
    assert sum(b.count for b in estimated.facets.category) == 12
    assert sum(b.count for b in estimated.facets.popularity) == 12
    assert [(b.value, b.count) for b in estimated.facets.tags] == [("eu", 12)]
    assert names(estimated) == names(exact)  # the page itself is never estimated
    # Narrow enough again: exact.
    assert search(index, "chat", filters={"category": "embeddings"}).facets.approximate is False


def test_past_the_count_cap_the_total_is_an_estimate_and_says_so(
    index: SearchIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(12):
        listed(index, f"s{n}", days=n, tags=["eu"])
    exact = search(index, "chat")
    assert (exact.total, exact.total_approximate) == (12, False)
    monkeypatch.setattr(sql_backend, "COUNT_CAP", 5)
    estimated = search(index, "chat")
    assert estimated.total_approximate is True
    assert estimated.total >= 6  # never below what was counted
    assert names(estimated) == names(exact)  # the page is exact whatever the total
    assert search(index, "chat", filters={"provider_id": "nobody"}).total_approximate is False
    # Every kind of filter goes through the estimate (on PostgreSQL, the planner's too).
    broad = search(index, filters={"tags": ["eu"], "min_calls_30d": 0})
    assert (broad.total_approximate, broad.total >= 6) == (True, True)
    assert search(index, "chat", filters={"tags": ["eu"]}, sort="popularity").total >= 6


def test_past_the_rank_window_relevance_ranks_the_newest_matches_and_says_so(
    index: SearchIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed(index, "quasar", description="Quasar", days=0, category="embeddings")  # best match, oldest
    listed(index, "s1", description="A quasar grade service", days=1, category="embeddings")
    for n in range(2, 7):
        listed(index, f"s{n}", description="A quasar grade service", days=n)
    listed(index, "quasar-five", description="A quasar grade service", days=5)  # a name hit, recent
    everything = search(index, "quasar", pagination={"limit": 10})
    assert set(names(everything)[:2]) == {"quasar-five", "quasar"}  # the two name hits first
    assert (everything.total, everything.ranking_approximate, everything.ranked) == (8, False, None)

    monkeypatch.setattr(sql_backend, "RANK_WINDOW", 4)
    windowed = search(index, "quasar", pagination={"limit": 10})
    # Only the four newest matches are ranked (s6, s5, quasar-five, s4 by date; on SQLite the four
    # indexed last, the same four here), best of them first;
    # the others follow newest first, so the oldest and best match comes last.
    assert names(windowed) == ["quasar-five", "s6", "s5", "s4", "s3", "s2", "s1", "quasar"]
    assert (windowed.total, windowed.total_approximate) == (8, False)  # counted as before
    assert (windowed.ranking_approximate, windowed.ranked) == (True, 4)
    assert all(hit.score is not None for hit in windowed.items)
    # Pages are slices of that one order, across the window's edge too: no repeats, nothing skipped.
    pages = [search(index, "quasar", pagination={"offset": n, "limit": 3}) for n in (0, 3, 6)]
    assert [name for page in pages for name in names(page)] == names(windowed)
    # A query with no more matches than the window ranks them all, exactly.
    narrow = search(index, "quasar", filters={"category": "embeddings"})
    assert names(narrow) == ["quasar", "s1"]
    assert (narrow.ranking_approximate, narrow.ranked) == (False, None)
    # Orders other than relevance see every match.
    for sort in ("newest", "popularity"):
        page = search(index, "quasar", sort=sort, pagination={"limit": 10})
        assert (len(page.items), page.ranking_approximate) == (8, False)
    assert "quasar" in names(search(index, "quasar", sort="popularity", pagination={"limit": 10}))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_on_sqlite_the_rank_window_holds_the_matches_indexed_last(
    index: SearchIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's window is taken by rowid (when a service was added to the index), not publication:
    FTS5 can then bound the full-text pass itself and score only the window's rows."""
    old_but_new_here = listed(index, "quasar-late", description="Quasar", days=0)  # published first...
    ids = [listed(index, f"s{n}", description="A quasar grade service", days=n) for n in range(1, 5)]
    with session_scope() as session:  # ...and added to the index again, after the others
        document = document_from_service(services.get(session, old_but_new_here))
    index.remove(old_but_new_here)
    index.index(document)
    listed(index, "quasar-early", description="Quasar", days=9)  # indexed last of all
    monkeypatch.setattr(sql_backend, "RANK_WINDOW", 3)
    page = search(index, "quasar", pagination={"limit": 10})
    assert (page.ranking_approximate, page.ranked, page.total) == (True, 3, 6)
    # Ranked: the three indexed last (quasar-early, quasar-late, s4), best first (the two name
    # hits, the newer published first on a tie); then the rest by index order, newest first.
    assert names(page) == ["quasar-early", "quasar-late", "s4", "s3", "s2", "s1"]
    pages = [search(index, "quasar", pagination={"offset": n, "limit": 2}) for n in (0, 2, 4)]
    assert [name for part in pages for name in names(part)] == names(page)
    # An update keeps a service's place: indexing s1 again does not move it into the window.
    with session_scope() as session:
        document = document_from_service(services.get(session, ids[0]))
    index.index(document)
    assert names(search(index, "quasar", pagination={"limit": 10})) == names(page)
