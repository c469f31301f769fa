"""The refresh-service-signals flow on a real Prefect server: it counts the last 30 days of usage
into service_signals, a rerun changes nothing, and its deployment is scheduled hourly."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prefect.client.orchestration import SyncPrefectClient

from deployments.stack import Stack
from flows.signals import refresh_service_signals
from storage.database import session_scope
from storage.repositories import service_signals
from storage.search import SearchQuery, get_search_index
from tests.storage.test_search_signals import NOW, calls, listed


def test_the_flow_counts_calls_and_a_rerun_changes_nothing(flow_env: pytest.MonkeyPatch, prefect_server: Stack) -> None:
    index = get_search_index()
    busy, idle = listed(index, "busy"), listed(index, "idle")
    calls(busy, 3, NOW - timedelta(days=3))
    calls(idle, 2, NOW - timedelta(days=45))
    assert refresh_service_signals(now=NOW) == 1
    assert refresh_service_signals(now=NOW) == 0  # safe to run twice
    with session_scope() as session:
        rows = service_signals.get_many(session, [busy, idle])
    assert {sid: row.calls_30d for sid, row in rows.items()} == {busy: 3}
    page = index.search(SearchQuery(sort="popularity"))
    assert [hit.name for hit in page.items] == ["busy", "idle"]
    assert [(b.value, b.count) for b in page.facets.popularity] == [("0", 1), ("1-99", 1)]


def test_the_deployment_is_scheduled_hourly(prefect_server: Stack) -> None:
    with SyncPrefectClient(prefect_server.config.prefect_api_url) as prefect:
        deployment = prefect.read_deployment_by_name("refresh-service-signals/refresh-service-signals")
    assert deployment.entrypoint == "flows/signals.py:refresh_service_signals"
    assert [s.schedule.interval for s in deployment.schedules] == [timedelta(hours=1)]  # type: ignore[union-attr]
    assert deployment.global_concurrency_limit is not None
    assert deployment.global_concurrency_limit.limit == 1  # one refresh at a time
