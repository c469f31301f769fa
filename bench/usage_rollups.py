"""Usage endpoint over a year of a heavy consumer, before and after the daily rollups.

    flock /tmp/heavy.lock .venv/bin/python bench/usage_rollups.py [--rows 10000000]
        [--load-budget 280] [--repeats 30] [--no-record]

A temporary PostgreSQL database (dropped afterwards), migrated by Alembic, is filled by SQL
alone (INSERT ... SELECT FROM generate_series, 1M rows a statement, time-ordered as a gateway
writes them) with a year of calls: 1,000 consumers, skewed so that `c0` makes ~10% of all calls;
each consumer calls 3 of 50 services with 3 keys; ~2% errors. Loading stops at `--rows` or when `--load-budget`
seconds are spent, and the size reached is the size measured. Then, timed: the first rollup (every
day), the endpoint `GET /api/v1/consumers/me/usage` (in-process, through FastAPI) for one year of
`c0` and of a typical consumer with partial first and last days, before the rollup (every raw row
read, as the endpoint did) and after it, and again after 1,000 late rows (read raw until the next
rollup), then that incremental rollup. Prints p50/p95 and appends a section to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi.testclient import TestClient
from sqlalchemy import event, text

from api.app import create_app
from storage.database import get_engine, reset_engine, session_scope
from storage.migrate import upgrade
from storage.repositories import usage as usage_repo
from storage.repositories import usage_rollups
from tests.support import auth
from tests.support.services import temporary_database

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
CHUNK = 1_000_000
T0 = datetime(2025, 12, 1, tzinfo=UTC)
YEAR = timedelta(days=365)
RANGE: dict[str, str | int] = {"from": "2025-12-01T06:00:00Z", "to": "2026-11-30T18:00:00Z", "limit": 50}

# one statement per chunk; consumer c0 gets u < 0.1, i.e. ~10% of the calls (floor(1000 u^3))
LOAD = text(
    """
    INSERT INTO usage_records (request_id, occurred_at, consumer_id, key_id, service_id, service_version,
        subscription_id, route, status, latency_ms, ttfb_ms, input_tokens, output_tokens, cost, currency,
        stream, error)
    SELECT 'b' || g, :t0 + (g::float8 / :total) * interval '365 days',
           'c' || c, 'c' || c || '-k' || (g % 3), 'svc-' || s, '1.0.0', 'sub-' || c || '-' || s,
           'chat.completions', CASE WHEN failed THEN 502 ELSE 200 END, 5 + 500 * random(), NULL,
           CASE WHEN failed THEN 0 ELSE tin END, CASE WHEN failed THEN 0 ELSE tout END,
           CASE WHEN failed THEN 0 ELSE round((tin * 0.0000015 + tout * 0.000002)::numeric, 12) END,
           'USD', false, CASE WHEN failed THEN 'upstream_unavailable' END
      FROM (SELECT g, c, (c * 7 + floor(3 * random())::int) % 50 AS s, failed, tin, tout
              FROM (SELECT g, floor(1000 * power(random(), 3))::int AS c, random() < 0.02 AS failed,
                           floor(800 * random())::int AS tin, floor(600 * random())::int AS tout
                      FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g) AS drawn) AS r
    """
)
LATE = text(
    """
    INSERT INTO usage_records (request_id, occurred_at, consumer_id, key_id, service_id, service_version,
        subscription_id, route, status, latency_ms, input_tokens, output_tokens, cost, currency)
    SELECT 'late-' || g, :t0 + (g * interval '10 minutes'), 'c0', 'c0-k0', 'svc-1', '1.0.0', 'sub-c0-1',
           'chat.completions', 200, 42, 10, 20, 0.00005, 'USD'
      FROM generate_series(1, 1000) AS g
    """
)


# the secondary indexes are built after the load (as a restore would): faster than row by row
INDEXES = {
    "ix_usage_records_consumer": "(consumer_id, occurred_at)",
    "ix_usage_records_service": "(service_id, occurred_at)",
    "ix_usage_records_recorded": "USING brin (recorded_at)",
}


def load(total: int, budget: float) -> tuple[int, float]:
    """Rows loaded and seconds spent, indexes included (stops at the budget, at a whole chunk)."""
    began, loaded = time.perf_counter(), 0
    with session_scope() as session:
        usage_repo.ensure_partitions(session, [usage_repo.month_start(T0, k) for k in range(13)])
        for name in INDEXES:
            session.execute(text(f"DROP INDEX {name}"))
    while loaded < total and time.perf_counter() - began < budget:
        count = min(CHUNK, total - loaded)
        with get_engine().begin() as connection:
            connection.execute(text("SET LOCAL synchronous_commit = off"))
            params = {"t0": T0, "total": total, "first": loaded + 1, "last": loaded + count}
            connection.execute(LOAD, params)
        loaded += count
        print(f"loaded {loaded:,} rows in {time.perf_counter() - began:.0f} s", flush=True)
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("SET maintenance_work_mem = '1GB'"))
        for name, columns in INDEXES.items():
            connection.execute(text(f"CREATE INDEX {name} ON usage_records {columns}"))
        connection.execute(text("VACUUM ANALYZE usage_records"))  # as autovacuum would, soon after
    return loaded, time.perf_counter() - began


def timed(call: Callable[[], Any], repeats: int) -> list[float]:
    for _ in range(2):
        call()
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        samples.append((time.perf_counter() - began) * 1000)
    return samples


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def endpoint(client: TestClient, consumer: str) -> Callable[[], Any]:
    headers = auth.consumer(consumer)

    def call() -> Any:
        answer = client.get("/api/v1/consumers/me/usage", params=RANGE, headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.json()

    return call


def roll_up() -> tuple[float, int]:
    began = time.perf_counter()
    with session_scope() as session:
        days = len(usage_rollups.roll_up(session, timedelta(0)).days)
    return time.perf_counter() - began, days


def explain_statements(call: Callable[[], Any]) -> None:
    """EXPLAIN ANALYZE of every SELECT one call sends, with its parameters."""
    sent: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, parameters))

    event.listen(get_engine(), "before_cursor_execute", keep)
    try:
        call()
    finally:
        event.remove(get_engine(), "before_cursor_execute", keep)
    with get_engine().connect() as connection:
        for statement, parameters in sent:
            plan = connection.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).all()
            print("\n".join(row[0] for row in plan), "\n", flush=True)


def run(rows: int, budget: float, repeats: int, explain: bool = False) -> tuple[list[str], list[str]]:
    table: list[str] = []
    notes: list[str] = []
    with temporary_database(prefix="mkt_bench") as url:
        upgrade(url)
        os.environ["MARKETPLACE_DATABASE__URL"] = url
        reset_engine()
        loaded, seconds = load(rows, budget)
        notes.append(f"loaded {loaded:,} rows in {seconds:.0f} s ({loaded / seconds:,.0f} rows/s)")
        with TestClient(create_app()) as client:
            heavy, typical = endpoint(client, "c0"), endpoint(client, "c500")
            answers = {"c0": heavy()["total"], "c500": typical()["total"]}
            for label, call in (("c0", heavy), ("c500", typical)):
                table.append(_row("raw rows (no rollup yet)", label, answers[label], timed(call, repeats)))
            spent, days = roll_up()
            with session_scope() as session:
                rollup_rows = session.scalar(text("SELECT count(*) FROM usage_rollups"))
            notes.append(f"first rollup: {days} days, {rollup_rows:,} rollup rows in {spent:.1f} s")
            for label, call in (("c0", heavy), ("c500", typical)):
                assert call()["total"] == answers[label], "the rollups must give the raw rows' totals"
                table.append(_row("rollups + raw edges", label, answers[label], timed(call, repeats)))
            with get_engine().begin() as connection:
                connection.execute(LATE, {"t0": T0 + timedelta(days=2)})
            assert heavy()["total"] == answers["c0"] + 1000
            table.append(_row("rollups + 1,000 late rows read raw", "c0", answers["c0"] + 1000, timed(heavy, repeats)))
            spent, days = roll_up()
            notes.append(f"rollup after the late rows: {days} days redone in {spent:.1f} s")
            table.append(_row("rollups after that rollup", "c0", answers["c0"] + 1000, timed(heavy, repeats)))
            if explain:
                explain_statements(heavy)
        reset_engine()
    return table, notes


def _row(how: str, consumer: str, rows: int, samples: list[float]) -> str:
    line = f"| {how} | {consumer} | {rows:,} | {statistics.median(samples):.1f} | {p95(samples):.1f} |"
    print(line, flush=True)
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--load-budget", type=float, default=280.0, help="seconds of loading at most")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--explain", action="store_true", help="print the plans of the last call's statements")
    args = parser.parse_args()
    for noisy in ("httpx", "httpx2", "marketplace.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    began = time.perf_counter()
    rows, notes = run(args.rows, args.load_budget, args.repeats, args.explain)
    header = "| read | consumer | its calls in the year | p50 (ms) | p95 (ms) |\n| --- | --- | --- | --- | --- |\n"
    body = header + "\n".join(rows) + "\n\n" + "\n".join(f"- {n}" for n in notes)
    print(f"\n{body}\n\ntotal {time.perf_counter() - began:.0f} s")
    if args.no_record:
        return
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python bench/usage_rollups.py " + " ".join(sys.argv[1:])
    with RESULTS.open("a") as out:
        out.write(
            f"\n## Usage endpoint over a year, raw rows and daily rollups — {when}\n\nCommand: "
            f"`{command.strip()}` (2 cores shared with other sessions; PostgreSQL 15; "
            f"`GET /api/v1/consumers/me/usage` in-process through FastAPI, {args.repeats} calls after 2 "
            "warm-ups, range 2025-12-01T06:00Z to 2026-11-30T18:00Z, page of 50 and totals)\n\n"
            f"{body}\n"
        )


if __name__ == "__main__":
    main()
