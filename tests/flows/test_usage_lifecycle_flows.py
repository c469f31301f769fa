"""The usage lifecycle flows on a real Prefect server, on both databases: partitions ahead of the
month boundary, retention that waits for the rollups, reruns that do nothing new."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from flows.usage_lifecycle import maintain_usage_partitions, rollup_usage
from gateway.writer import rows_of
from storage.database import reset_engine, session_scope
from storage.repositories import usage as usage_repo
from storage.repositories import usage_archive, usage_rollups
from storage.repositories.usage import UsageQuery
from tests.support.usage import handed, random_records, raw_groups, rollup_groups, store

NOW = datetime.now(UTC)


def totals(q: UsageQuery) -> tuple[usage_repo.Totals, usage_repo.Totals]:
    with session_scope() as session:
        return usage_rollups.totals(session, q), usage_repo.totals(session, q)


def test_partitions_are_made_ahead_so_the_boundary_of_a_coming_month_needs_no_fallback(
    flow_env: pytest.MonkeyPatch, database_url: str, tmp_path: Path
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("partitions are PostgreSQL's")
    flow_env.setenv("MARKETPLACE_USAGE__PARTITIONS_AHEAD_MONTHS", "2")
    reset_engine()
    kept = 120  # months: nothing past retention here
    first = maintain_usage_partitions(
        now=datetime(2032, 1, 15, tzinfo=UTC), retention_months=kept, archive_dir=str(tmp_path)
    )
    assert first.created == ["usage_records_2032_01", "usage_records_2032_02", "usage_records_2032_03"]
    last_of_february = datetime(2032, 2, 29, 23, 59, 59, 999000, tzinfo=UTC)  # a leap year
    first_of_march = datetime(2032, 3, 1, tzinfo=UTC)
    with session_scope() as session:  # the writer's own insert, without its create-on-error fallback
        boundary = [handed("feb-last", last_of_february), handed("mar-first", first_of_march)]
        usage_repo.insert_records(session, rows_of([r.to_json() for r in boundary]))
    with session_scope() as session:
        rows = session.execute(text("SELECT request_id, tableoid::regclass::text FROM usage_records")).all()
        where = {str(request_id): str(table) for request_id, table in rows}
    assert where == {"feb-last": "usage_records_2032_02", "mar-first": "usage_records_2032_03"}
    again = maintain_usage_partitions(
        now=datetime(2032, 1, 15, tzinfo=UTC), retention_months=kept, archive_dir=str(tmp_path)
    )
    assert (again.created, again.archived, again.waiting) == ([], {}, [])


def test_retention_waits_for_the_rollups_then_archives_once(
    flow_env: pytest.MonkeyPatch, database_url: str, tmp_path: Path
) -> None:
    store(random_records(200, date(2025, 5, 3), 20))  # May 2025, long past a 12-month retention
    store(random_records(20, NOW.date(), 0, prefix="now"))
    waiting = maintain_usage_partitions(now=NOW, retention_months=12, archive_dir=str(tmp_path))
    assert "2025-05" in waiting.waiting and waiting.archived == {}
    rollup_usage(lag_seconds=0)
    done = maintain_usage_partitions(now=NOW, retention_months=12, archive_dir=str(tmp_path))
    assert done.archived["2025-05"] == str(tmp_path / "usage_records_2025_05.csv.gz")
    assert done.archived_rows == 200
    assert usage_archive.read_back(tmp_path / "usage_records_2025_05.csv.gz").rows == 200
    may = UsageQuery(start=datetime(2025, 5, 1, tzinfo=UTC), end=datetime(2025, 6, 1, tzinfo=UTC))
    rolled, raw = totals(may)
    assert raw.requests == 0 and rolled.requests == 200  # the rows are gone, the daily rollups stay
    again = maintain_usage_partitions(now=NOW, retention_months=12, archive_dir=str(tmp_path))
    assert (again.created, again.archived, again.waiting) == ([], {}, [])
    assert totals(UsageQuery(start=NOW.replace(hour=0, minute=0, second=0, microsecond=0)))[1].requests == 20


def test_rollup_usage_reruns_give_the_same_totals_and_take_late_rows(
    flow_env: pytest.MonkeyPatch, database_url: str
) -> None:
    store(random_records(300, date(2026, 10, 28), 7))
    first = rollup_usage(lag_seconds=0)
    assert len(first.days) == 7
    assert rollup_groups().keys() == raw_groups().keys()
    snapshot = rollup_groups()
    assert rollup_usage(lag_seconds=0).days == []
    assert rollup_groups() == snapshot
    store([handed("late", datetime(2026, 10, 29, 3, tzinfo=UTC), consumer="bob", cost="3.25")])
    assert rollup_usage(lag_seconds=0).days == [date(2026, 10, 29)]
    assert {k: v["requests"] for k, v in rollup_groups().items()} == {k: v["requests"] for k, v in raw_groups().items()}
    rolled, raw = totals(UsageQuery(consumer_id="bob"))
    assert rolled == raw
