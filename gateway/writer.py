"""The usage writer: records handed off to the Redis stream or the journal, batched into the database.

Every gateway process runs one. From the stream it reads as a member of one consumer group, so
each record goes to one writer; it acknowledges (and deletes) entries only after their rows are
committed, and claims entries a dead process had read but not acknowledged. It also replays
journal segments nobody holds. Inserts are idempotent (request id + time), so a record written
twice (a retried batch, a replayed journal after a crash) is one row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from core.logging import configure_logging, resolve_format
from core.settings import Settings, UsageSettings, get_settings
from gateway.handoff import STREAM
from gateway.journal import Journal, claimed_segments, read_segment
from gateway.usage import UsageRecord
from storage.database import build_engine
from storage.repositories import quotas, run_requests
from storage.repositories import usage as usage_repo

log = logging.getLogger("marketplace.gateway.writer")
GROUP = "usage-writers"
JOURNAL_ROTATE_SECONDS = 1.0
DRAIN_SECONDS = 10.0


def rows_of(lines: Sequence[bytes]) -> list[dict[str, Any]]:
    rows = []
    for line in lines:
        record = UsageRecord.from_json(line)
        row = {f.name: getattr(record, f.name) for f in fields(record)}
        row["occurred_at"] = datetime.fromtimestamp(record.occurred_at, UTC)
        rows.append(row)
    return rows


def store(engine: Engine, lines: Sequence[bytes]) -> None:
    """Insert the records in one transaction (creating a month's partition when one is missing),
    with the quota counters they move and the quota alerts they raise."""
    rows = rows_of(lines)
    with Session(engine) as session:
        try:
            stored = usage_repo.insert_records(session, rows)
        except DBAPIError as exc:
            if "no partition" not in str(exc):
                raise
            session.rollback()
            usage_repo.ensure_partitions(session, [r["occurred_at"] for r in rows])
            stored = usage_repo.insert_records(session, rows)
        _alert_quotas(session, stored)
        session.commit()


def _alert_quotas(session: Session, stored: Sequence[dict[str, Any]]) -> None:
    """Count the stored rows against their quotas; a threshold reached owes a run that tells the consumer
    (by webhook, retried and recorded, in Prefect). The event for Kafka is in the outbox already."""
    billing = get_settings().billing
    for alert in quotas.count_usage(session, stored, billing.quota_alert_thresholds):
        spec = run_requests.RunSpec(
            kind="quota-alert",
            deployment=billing.quota_alert_deployment,
            parameters={"alert_id": alert.id},
            idempotency_key=f"quota-alert-{alert.id}",
            run_name=f"quota {alert.threshold}% {alert.metric} {alert.consumer_id}"[:256],
            tags=("quota-alert",),
        )
        run_requests.enqueue(session, spec)


class UsageWriter:
    def __init__(self, engine: Engine, redis: Redis | None, journal: Journal, settings: UsageSettings) -> None:
        self.engine = engine
        self.redis = redis
        self.journal = journal
        self.settings = settings
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await asyncio.to_thread(self._prepare_partitions)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._journal_loop()))
        if self.redis is not None:
            self._tasks.append(loop.create_task(self._stream_loop()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # what is left would be written by the next writer; a clean stop writes it now (bounded)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(DRAIN_SECONDS):
                await self._drain_stream()
        self.journal.rotate()
        with contextlib.suppress(Exception):
            await self.drain_journal()

    async def _drain_stream(self) -> None:
        if self.redis is None:
            return
        await self._ensure_group()
        while await self._read_new(block=None) > 0:
            pass

    def _prepare_partitions(self) -> None:
        try:
            with Session(self.engine) as session:
                usage_repo.ensure_partitions(session, [datetime.now(UTC)])
                session.commit()
        except DBAPIError:
            log.warning("could not create this month's usage partitions now; will on first write", exc_info=True)

    async def _stream_loop(self) -> None:
        assert self.redis is not None
        claimed_at, grouped = 0.0, False
        while True:
            try:
                if not grouped:
                    await self._ensure_group()
                    grouped = True
                loop_time = asyncio.get_running_loop().time()
                if loop_time - claimed_at >= self.settings.idle_claim_seconds:
                    claimed_at = loop_time
                    await self._claim_abandoned()
                if await self._read_new() < self.settings.batch_size:
                    # a small batch: let records gather, so the database sees few, large transactions
                    await asyncio.sleep(self.settings.linger_seconds)
            except (RedisError, OSError) as exc:
                grouped = False
                log.warning("usage stream unavailable (%s); retrying", exc)
                await asyncio.sleep(self.settings.retry_seconds)

    async def _ensure_group(self) -> None:
        assert self.redis is not None
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
            await self.redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)

    async def _read_new(self, block: int | None = 200) -> int:
        """Store what arrived (waiting up to `block` ms for something); how many records it was."""
        assert self.redis is not None
        answer: Any = await self.redis.xreadgroup(
            GROUP, self.consumer, {STREAM: ">"}, count=self.settings.batch_size, block=block
        )
        streams = answer.items() if isinstance(answer, dict) else answer or []
        count = 0
        for _stream, entries in streams:
            count += len(entries)
            await self._commit(list(entries))
        return count

    async def _claim_abandoned(self) -> None:
        """Entries another writer read and never acknowledged (it died) are ours after a while."""
        assert self.redis is not None
        idle_ms = int(self.settings.idle_claim_seconds * 1000)
        start = "0-0"
        while True:
            answer = await self.redis.xautoclaim(
                STREAM, GROUP, self.consumer, idle_ms, start_id=start, count=self.settings.batch_size
            )
            start, entries = answer[0], list(answer[1])
            if entries:
                await self._commit(entries)
            if start in (b"0-0", "0-0"):
                return

    async def _commit(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Store the entries, retrying until the database takes them; then acknowledge and delete them."""
        assert self.redis is not None
        lines = [fields[b"r"] for _, fields in entries if fields and b"r" in fields]
        await self._store_until_done(lines)
        ids = [entry_id for entry_id, _ in entries]
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(STREAM, GROUP, *ids)
        pipe.xdel(STREAM, *ids)
        await pipe.execute()

    async def _store_until_done(self, lines: list[bytes]) -> None:
        while True:
            try:
                await asyncio.to_thread(store, self.engine, lines)
                return
            except DBAPIError as exc:
                log.warning("usage records not stored yet (%s); retrying", type(exc).__name__)
                await asyncio.sleep(self.settings.retry_seconds)

    async def _journal_loop(self) -> None:
        while True:
            await asyncio.sleep(JOURNAL_ROTATE_SECONDS)
            try:
                await self.drain_journal()
            except DBAPIError as exc:
                log.warning("journal replay waits for the database (%s)", type(exc).__name__)

    async def drain_journal(self) -> None:
        await asyncio.to_thread(self._replay, self.journal.folder)

    def _replay(self, folder: Path) -> None:
        with claimed_segments(folder) as segments:
            for path, fd in segments:
                lines = read_segment(fd)
                for start in range(0, len(lines), self.settings.batch_size):
                    store(self.engine, lines[start : start + self.settings.batch_size])
                path.unlink(missing_ok=True)


async def run_writer(settings: Settings) -> None:
    """A writer process: until SIGTERM/SIGINT, then it drains what it can and stops."""
    engine = build_engine(settings.database.url, pool_size=2, max_overflow=2)
    url = settings.gateway.redis_url or settings.cache.redis_url
    redis = Redis.from_url(url, socket_timeout=10.0, socket_connect_timeout=10.0) if url else None
    writer = UsageWriter(engine, redis, Journal(settings.gateway.journal_dir), settings.usage)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await writer.start()
    await stop.wait()
    await writer.stop()
    if redis is not None:
        await redis.aclose()
    engine.dispose()


def main() -> None:
    """`python -m gateway.writer`: usage records from the stream and the journals into the database."""
    settings = Settings()
    configure_logging(settings.log_level, resolve_format(settings.log_format, settings.environment == "development"))
    uvloop.run(run_writer(settings))


if __name__ == "__main__":
    main()
