"""Outbox relay throughput: events per second from PostgreSQL to a Kafka-protocol broker (Tansu).

    .venv/bin/python bench/outbox_relay.py                    # 10,000 events, 100 services, 3 runs

Each run gets a fresh database and a fresh broker on a free loopback port, writes the events
through the outbox repository (not timed), then times the relay's rounds from the first one
(producer start, topic creation, idempotent producer id included) until every event is
delivered. Prints the median and appends it to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.settings import KafkaSettings  # noqa: E402
from notifications.relay import OutboxRelay  # noqa: E402
from storage.database import reset_engine, session_scope  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.repositories import outbox  # noqa: E402
from tests.support.kafka import TansuBroker  # noqa: E402
from tests.support.services import temporary_database  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"


def write_events(count: int, services: int) -> None:
    """`count` events round robin over `services` services, 1,000 per transaction."""
    for start in range(0, count, 1000):
        with session_scope() as session:
            for n in range(start, min(start + 1000, count)):
                service_id = f"bench-service-{n % services:04d}"
                data = {"serviceId": service_id, "name": "bench", "version": "1.0.0", "n": n}
                outbox.add(session, aggregate_id=service_id, event_type="service_updated", data=data)


def one_run(count: int, services: int, batch_size: int) -> tuple[float, int]:
    """Seconds until all `count` events are delivered, and the rounds it took."""
    with temporary_database(prefix="mkt_bench_relay") as url, TansuBroker() as broker:
        upgrade(url)
        os.environ["MARKETPLACE_DATABASE__URL"] = url
        reset_engine()
        write_events(count, services)
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, batch_size=batch_size)
        relay = OutboxRelay(settings)
        rounds, delivered = 0, 0
        started = time.perf_counter()
        try:
            while delivered < count:
                result = relay.run_once()
                rounds, delivered = rounds + 1, delivered + result.delivered
                if result.failed:
                    raise RuntimeError(f"{result.failed} events failed in round {rounds}")
        finally:
            elapsed = time.perf_counter() - started
            relay.close()
            reset_engine()
        return elapsed, rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    samples = [one_run(args.events, args.services, args.batch_size) for _ in range(args.runs)]
    rates = [args.events / seconds for seconds, _ in samples]
    header = "| events | services | batch | runs | median (events/s) | min | max | median time (s) | rounds |\n"
    header += "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    row = (
        f"| {args.events} | {args.services} | {args.batch_size} | {args.runs} | {statistics.median(rates):.0f} "
        f"| {min(rates):.0f} | {max(rates):.0f} | {statistics.median(s for s, _ in samples):.2f} "
        f"| {samples[0][1]} |"
    )
    table = f"{header}\n{row}"
    print(table)
    command = f"python bench/outbox_relay.py --events {args.events} --services {args.services} --runs {args.runs}"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"## Outbox relay throughput — {when}"
    with RESULTS.open("a") as out:
        out.write(f"\n{title}\n\nCommand: `{command}` (2 cores, PostgreSQL, Tansu)\n\n{table}\n")


if __name__ == "__main__":
    main()
