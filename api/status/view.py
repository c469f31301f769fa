"""The status read model of one app: where a status read gets its record, and how it stays fresh.

A status report is polled, often many times a second per publication, while the pipeline runs.
Our records' part (`StatusRecord`: service, latest version, its phase results) is cached like
GET /services/{id}, under the service's change token (storage/cache.py): any committed change to
the service, its versions or its phase results, from any process, invalidates it (with Redis, by
pub/sub: storage/near_cache.py). The Prefect run state is added on every read from the
orchestrator's memory (api/status/run_states.py), which never waits for Prefect.

One `StatusView` per app (created at start-up, on `app.state`, handed to routes as a dependency):
its loads in flight and its last served records belong to that app, not to the module.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cachetools import LRUCache
from starlette.concurrency import run_in_threadpool

from api.orchestrator import Orchestrator
from api.status.record import StatusRecord, render_status, status_record
from storage.cache import ReadCache
from storage.database import session_scope
from storage.repositories import phases

STATUS = "status"  # the kind of the read cache's entries that are status records
LAST_SERVED_MAX = 10_000


class StatusView:
    """Status reads: from memory when it holds the current record, else loaded once for all askers."""

    def __init__(
        self,
        cache: ReadCache,
        orchestrator: Orchestrator,
        *,
        wait_seconds: float,
        last_served_max: int = LAST_SERVED_MAX,
    ) -> None:
        self._cache = cache
        self._orchestrator = orchestrator
        # How long a read waits for a changed record before it answers with the one served last.
        self.wait_seconds = wait_seconds
        # Used on the event loop only. Loads in flight by (service, invalidations seen), and the record
        # last served for each service (what a read gets while a slow load of a changed record goes on).
        self._loads: dict[tuple[str, int], asyncio.Future[StatusRecord]] = {}
        self._last_served: LRUCache[str, StatusRecord] = LRUCache(last_served_max)

    def load(self, service_id: str) -> StatusRecord:
        """The record from the cache, or from the database (two queries, then cached). 404 for an unknown service."""
        token = self._cache.service_token(service_id)  # before loading: see storage/cache.py
        cached = self._cache.get_entry(STATUS, service_id, token)
        if cached is not None:
            return StatusRecord.from_json(cached)
        with session_scope() as session:
            record = status_record(phases.publication(session, service_id))
        self._cache.put_entry(STATUS, service_id, token, record.to_json())
        return record

    async def current(self, service_id: str) -> StatusRecord:
        """The record from memory when this process holds it under the service's current token (no I/O);
        otherwise loaded on the thread pool, once for all the requests asking at the same time.

        A request joins a load only if no invalidation of the service reached this process since
        that load began, so what it gets is never older than a change it could have heard of. A load
        slower than `wait_seconds` (a busy database) is not waited for when this process has served
        the service before: that record is the answer, and the next read gets the new one.
        """
        cached = self._cache.peek_entry(STATUS, service_id)
        if cached is not None:
            return self._served(StatusRecord.from_json(cached))
        version = self._cache.change_version(service_id)
        if version is None:  # no way to tell whether a load in flight is recent enough
            return self._served(await run_in_threadpool(self.load, service_id))
        loading = self._loading(service_id, version)
        last = self._last_served.get(service_id)
        if last is None:
            return await asyncio.shield(loading)
        try:
            return await asyncio.wait_for(asyncio.shield(loading), self.wait_seconds)
        except TimeoutError:
            return last

    def render(self, record: StatusRecord) -> dict[str, Any]:
        """The full report (ServiceStatusOut as JSON): the record and the run's Prefect state."""
        return render_status(record, self._orchestrator)

    def _loading(self, service_id: str, version: int) -> asyncio.Future[StatusRecord]:
        """The load of the record as of `version` (invalidations seen), started unless one is in flight."""
        key = (service_id, version)
        loading = self._loads.get(key)
        if loading is None:
            loading = self._loads[key] = asyncio.ensure_future(run_in_threadpool(self.load, service_id))
            loading.add_done_callback(lambda done: self._loaded(key, done))
        return loading

    def _served(self, record: StatusRecord) -> StatusRecord:
        self._last_served[record.service_id] = record
        return record

    def _loaded(self, key: tuple[str, int], done: asyncio.Future[StatusRecord]) -> None:
        self._loads.pop(key, None)
        if not done.cancelled() and done.exception() is None:
            self._served(done.result())
