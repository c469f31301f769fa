"""Hands usage records off durably before the answers complete, in groups (group commit).

A finished call submits its record and the settlement of its quota reservation and waits. One
flush at a time takes everything submitted meanwhile: one Redis pipeline with an XADD per
record to the usage stream and the quota corrections; when Redis fails, one append (and fsync)
of the whole group to the local journal. Under load a group holds many calls, so the cost per
call is a fraction of a round trip; when idle a call waits one round trip.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from gateway.journal import Journal
from gateway.limits import Limits
from gateway.resp import Arg, RedisReplyError, RespClient
from gateway.usage import UsageRecord

log = logging.getLogger("marketplace.gateway.handoff")
STREAM = "gw:usage"
MAX_GROUP = 2000


@dataclass(frozen=True, slots=True)
class Settlement:
    """How to correct a reservation: requests and tokens to add (negative gives back)."""

    quota: str
    requests: int
    tokens: int
    shared: bool  # the reservation was made in Redis


class Handoff:
    def __init__(self, redis: RespClient | None, limits: Limits, journal: Journal) -> None:
        self.redis = redis
        self.limits = limits
        self.journal = journal
        self._queue: list[tuple[UsageRecord, Settlement | None, asyncio.Future[None]]] = []
        self._flushing = False
        self._unsettled: list[Settlement] = []  # corrections Redis could not take yet

    async def submit(self, record: UsageRecord, settlement: Settlement | None) -> None:
        """Return once the record is in Redis or in the journal."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((record, settlement, future))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush_all())
        await future

    async def _flush_all(self) -> None:
        try:
            while self._queue:
                group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
                try:
                    await self._flush(group)
                except Exception as exc:  # the journal failed too: the calls must not pretend
                    log.exception("usage hand-off failed")
                    for _, _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for _, _, future in group:
                        if not future.done():
                            future.set_result(None)
        finally:
            self._flushing = False

    async def _flush(self, group: list[tuple[UsageRecord, Settlement | None, asyncio.Future[None]]]) -> None:
        lines = [record.to_json() for record, _, _ in group]
        settles = [s for _, s, _ in group if s is not None]
        for s in settles:
            if not s.shared:
                self.limits.local.settle(s.quota, s.requests, s.tokens)
        shared = [*self._unsettled, *(s for s in settles if s.shared)]
        self._unsettled = []
        if self.redis is not None and self.limits.redis_up:
            try:
                await self._to_redis(lines, shared)
                return
            except (RedisReplyError, OSError) as exc:
                self.limits.redis_failed(exc)
        self._unsettled = shared[-100_000:]  # applied with the first group Redis takes again
        await asyncio.to_thread(self.journal.append, lines)

    async def _to_redis(self, lines: list[bytes], settles: list[Settlement]) -> None:
        assert self.redis is not None
        commands: list[tuple[Arg, ...]] = [("XADD", STREAM, "*", "r", line) for line in lines]
        for s in settles:
            if s.requests:
                commands.append(("HINCRBY", s.quota, "r", s.requests))
            if s.tokens:
                commands.append(("HINCRBY", s.quota, "t", s.tokens))
        await self.redis.pipeline(commands)
