"""Usage partitions, daily rollups and month archives, on SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from storage.database import get_engine, session_scope
from storage.models import UsageArchive, UsageRollup
from storage.repositories import usage as usage_repo
from storage.repositories import usage_archive, usage_rollups
from storage.repositories.usage import UsageQuery
from storage.repositories.usage_archive import ArchiveMismatchError
from tests.support.usage import handed, random_records, raw_groups, rollup_groups, store

NO_LAG = timedelta(0)


def roll_up() -> usage_rollups.RollupRun:
    with session_scope() as session:
        return usage_rollups.roll_up(session, NO_LAG)


def assert_rollups_match_raw_rows() -> None:
    raw, rolled = raw_groups(), rollup_groups()
    assert rolled.keys() == raw.keys()
    for key, figures in raw.items():
        got = rolled[key]
        for exact in ("requests", "errors", "input_tokens", "output_tokens", "cost"):
            assert got[exact] == figures[exact], (key, exact)
        for p in ("p50", "p95", "p99"):
            assert got[p] == pytest.approx(figures[p], abs=1e-6), (key, p)


def raw_totals(q: UsageQuery) -> usage_repo.Totals:
    with session_scope() as session:
        return usage_repo.totals(session, q)


def read_totals(q: UsageQuery) -> usage_repo.Totals:
    with session_scope() as session:
        return usage_rollups.totals(session, q)


# --- partitions ---


def partition_of(session: Session, request_id: str) -> str:
    sql = text("SELECT tableoid::regclass::text FROM usage_records WHERE request_id = :id")
    return str(session.execute(sql, {"id": request_id}).scalar_one())


def test_partitions_made_ahead_take_both_sides_of_a_month_boundary(database_url: str) -> None:
    """Rows at the last millisecond of January and the first instant of February go straight in
    (no fallback creation on error) to their own months, whatever the session's time zone."""
    if not database_url.startswith("postgresql"):
        pytest.skip("partitions are PostgreSQL's")
    with session_scope() as session:
        session.execute(text("SET LOCAL TIME ZONE 'Pacific/Auckland'"))  # bounds must not follow it
        created = usage_repo.ensure_partitions(session, [datetime(2031, 1, 5, tzinfo=UTC)])
    assert created == ["usage_records_2031_01", "usage_records_2031_02"]
    with session_scope() as session:
        assert usage_repo.ensure_partitions(session, [datetime(2031, 1, 5, tzinfo=UTC)]) == []  # idempotent
    last = datetime(2031, 1, 31, 23, 59, 59, 999000, tzinfo=UTC)
    first = datetime(2031, 2, 1, tzinfo=UTC)
    from gateway.writer import rows_of

    with session_scope() as session:
        rows = rows_of([handed("jan-last", last).to_json(), handed("feb-first", first).to_json()])
        usage_repo.insert_records(session, rows)  # no partition created on the way
    with session_scope() as session:
        assert partition_of(session, "jan-last") == "usage_records_2031_01"
        assert partition_of(session, "feb-first") == "usage_records_2031_02"
        assert session.scalar(text("SELECT occurred_at FROM usage_records WHERE request_id = 'jan-last'")) == last


# --- rollups ---


def test_rollups_equal_the_raw_rows_and_a_rerun_changes_nothing(database_url: str) -> None:
    store(random_records(600, date(2026, 10, 30), 5))  # crosses a month boundary too
    run = roll_up()
    assert run.previous is None
    assert run.days == [date(2026, 10, 30) + timedelta(days=n) for n in range(5)]
    assert_rollups_match_raw_rows()
    before = rollup_groups()
    again = roll_up()
    assert again.days == [] and again.previous == run.rolled_through
    assert rollup_groups() == before


def test_late_rows_are_counted_on_the_next_run_and_reads_stay_exact_meanwhile(database_url: str) -> None:
    store(random_records(300, date(2026, 11, 1), 10))
    roll_up()
    alice = UsageQuery(consumer_id="alice", start=datetime(2026, 11, 1, 6, tzinfo=UTC))
    late = [
        handed("late-1", datetime(2026, 11, 3, 10, tzinfo=UTC), cost="1.5"),
        handed("late-2", datetime(2026, 11, 3, 23, 59, 59, 999000, tzinfo=UTC), cost="0.25", currency="EUR"),
    ]
    store(late)  # a journal replayed days later
    assert read_totals(alice) == raw_totals(alice)  # before the rollup: the late rows are read raw
    run = roll_up()
    assert run.days == [date(2026, 11, 3)]  # only the day the late rows touched is redone
    assert_rollups_match_raw_rows()
    assert read_totals(alice) == raw_totals(alice)
    store(late)  # handed off twice: stored once, nothing to redo
    assert roll_up().days == []


def test_reads_combine_rollups_for_whole_days_with_raw_edges(database_url: str) -> None:
    store(random_records(400, date(2026, 9, 1), 20))
    roll_up()

    def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
        return datetime(2026, 9, day, hour, minute, tzinfo=UTC)

    queries = [
        UsageQuery(consumer_id="bob"),
        UsageQuery(consumer_id="bob", start=at(3, 12, 30)),
        UsageQuery(service_id="svc-2", start=at(2), end=at(15, 7)),
        UsageQuery(consumer_id="carol", start=at(4, 1), end=at(4, 9)),  # no whole day: all raw
        UsageQuery(consumer_id="alice", end=at(10)),
    ]
    for q in queries:
        assert read_totals(q) == raw_totals(q), q
    with session_scope() as session:  # the whole days really come from the rollups
        session.execute(update(UsageRollup).where(UsageRollup.consumer_id == "bob").values(requests=0))
    assert read_totals(UsageQuery(consumer_id="bob")).requests == 0


def test_sqlite_and_postgresql_percentiles_agree_with_linear_interpolation(database_url: str) -> None:
    at = datetime(2026, 8, 1, 12, tzinfo=UTC)
    store([handed(f"p-{n}", at + timedelta(seconds=n), latency_ms=float(ms)) for n, ms in enumerate([10, 20, 30, 40])])
    roll_up()
    with session_scope() as session:
        row = session.scalars(select(UsageRollup)).one()
        assert row.latency_p50_ms == pytest.approx(25.0)
        assert row.latency_p95_ms == pytest.approx(38.5)
        assert (row.requests, row.errors, row.cost) == (4, 0, Decimal("0.000492"))


# --- retention ---


def archive(month: date, folder: Path) -> usage_archive.Export:
    with session_scope() as session:
        export = usage_archive.export_month(session, month, folder)
    with session_scope() as session:
        usage_archive.verify(session, export)
    with session_scope() as session:
        usage_archive.remove_month(session, export)
    return export


def month_rows(month: date) -> int:
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    q = UsageQuery(start=start, end=usage_repo.month_start(start, 1))
    return raw_totals(q).requests


def test_a_month_past_retention_is_exported_verified_and_removed(database_url: str, tmp_path: Path) -> None:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    store(random_records(250, date(2025, 9, 20), 20))  # September and October 2025
    store(random_records(50, date(2026, 6, 1), 3, prefix="kept"))
    with session_scope() as session:
        assert usage_archive.unrolled_rows(session, date(2025, 9, 1)) is None  # no rollup yet: wait
    roll_up()
    expected = raw_totals(UsageQuery(start=datetime(2025, 9, 1, tzinfo=UTC), end=datetime(2025, 10, 1, tzinfo=UTC)))
    with session_scope() as session:
        expired = usage_archive.expired_months(session, now, retention_months=12)
        assert usage_archive.unrolled_rows(session, date(2025, 9, 1)) == 0
    assert date(2025, 9, 1) in expired and date(2025, 10, 1) in expired and date(2026, 6, 1) not in expired
    export = archive(date(2025, 9, 1), tmp_path)
    assert export.path == tmp_path / "usage_records_2025_09.csv.gz"
    assert (export.figures.rows, export.figures.cost) == (expected.requests, expected.cost)
    assert usage_archive.read_back(export.path) == export.figures
    with gzip.open(export.path, "rt") as f:
        assert f.readline().strip().split(",") == list(usage_archive.EXPORTED)
    assert month_rows(date(2025, 9, 1)) == 0
    with session_scope() as session:
        assert date(2025, 9, 1) not in usage_archive.expired_months(session, now, retention_months=12)
        stored = session.scalars(select(UsageArchive)).one()
        assert (stored.rows, stored.cost) == (expected.requests, {c: format(a, "f") for c, a in expected.cost.items()})
        if database_url.startswith("postgresql"):
            assert session.scalar(text("SELECT to_regclass('usage_records_2025_09')")) is None
    # the rollups outlive the raw rows: the month's whole days still read the same
    september = UsageQuery(start=datetime(2025, 9, 1, tzinfo=UTC), end=datetime(2025, 10, 1, tzinfo=UTC))
    assert read_totals(september) == expected
    assert month_rows(date(2026, 6, 1)) == 50


def test_a_tampered_export_is_refused_and_nothing_is_removed(database_url: str, tmp_path: Path) -> None:
    store(random_records(40, date(2025, 3, 2), 5))
    with session_scope() as session:
        export = usage_archive.export_month(session, date(2025, 3, 1), tmp_path)
    lines = gzip.decompress(export.path.read_bytes()).decode().splitlines(keepends=True)
    export.path.write_bytes(gzip.compress("".join(lines[:-1]).encode()))  # a row lost on the way
    with pytest.raises(ArchiveMismatchError, match="the file holds"), session_scope() as session:
        usage_archive.verify(session, export)
    assert month_rows(date(2025, 3, 1)) == 40


def test_a_row_arriving_after_the_export_keeps_the_month(database_url: str, tmp_path: Path) -> None:
    store(random_records(30, date(2025, 4, 2), 5))
    with session_scope() as session:
        export = usage_archive.export_month(session, date(2025, 4, 1), tmp_path)
    store([handed("straggler", datetime(2025, 4, 20, tzinfo=UTC))])
    with pytest.raises(ArchiveMismatchError, match="now holds 31 rows"), session_scope() as session:
        usage_archive.remove_month(session, export)
    assert month_rows(date(2025, 4, 1)) == 31
    with session_scope() as session:
        assert session.scalars(select(UsageArchive)).all() == []


def test_a_long_range_is_a_handful_of_reads(database_url: str) -> None:
    """A consumer's month reads the rollups once, plus the watermark, the rows since it and a partial day."""
    store(random_records(100, date(2026, 1, 1), 30))
    roll_up()
    statements: list[str] = []

    def keep(_c: Any, _cur: Any, statement: str, *_a: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    from sqlalchemy import event

    event.listen(get_engine(), "before_cursor_execute", keep)
    try:
        read_totals(UsageQuery(consumer_id="alice", start=datetime(2026, 1, 1, 8, tzinfo=UTC)))
    finally:
        event.remove(get_engine(), "before_cursor_execute", keep)
    assert sum("usage_rollups" in s for s in statements) == 1
    assert len(statements) == 4  # watermark, rollups, rows since the watermark, the partial first day
