"""A short-lived cache of Prefect flow-run states, so status reads do not each call the Prefect API.

Status reports are polled (providers, dashboards, the e2e tests) while the Prefect server is at
its busiest; asking it for the run state on every read put a network call to a CPU-bound server,
and its latency, into every answer. Our database is the source of truth for the phases; Prefect
only contributes the run's state, and that may be a moment old:

- an entry read less than `ttl` seconds ago is served as is;
- an older one (up to `max_stale`) is served while a background refresh reads it again; the
  refresh reads every run due at that moment in one request to Prefect (a filter on their ids);
- with no entry, one older than `max_stale`, or one read before `not_before` (the caller's record
  says the run moved on after that: see api/status_report.py), the state is read now, once for
  all the threads asking at the same time.

So while a run is polled its state is at most `ttl` plus one Prefect round trip old, and Prefect
sees about one request per `ttl` for all polled runs together instead of one per status read.
A state that cannot be read (Prefect down or slow) is cached as unknown (None) for `ttl` too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger("marketplace.orchestrator")

S = TypeVar("S")


@dataclass
class _Entry(Generic[S]):
    state: S | None
    read_at: float  # wall clock (time.time()) when the read started: compared with record timestamps
    read_mono: float  # the same moment on the monotonic clock: the entry's age
    valid: bool = True  # False: a marker that reads started before it are out of date


@dataclass
class _Flight(Generic[S]):
    """A read in progress that other threads wait for instead of asking Prefect again."""

    started_at: float
    done: threading.Event = field(default_factory=threading.Event)
    state: S | None = None


class RunStateCache(Generic[S]):
    """States by flow run id; `read_one` and `read_many` ask Prefect (and never raise)."""

    def __init__(
        self,
        read_one: Callable[[str], S | None],
        read_many: Callable[[list[str]], dict[str, S | None]],
        *,
        ttl: float,
        max_stale: float,
        wait_timeout: float,
        max_entries: int = 10_000,
        is_final: Callable[[S], bool] = lambda _state: False,
        final_ttl: float | None = None,
    ) -> None:
        self._read_one = read_one
        self._read_many = read_many
        self._ttl = ttl
        self._max_stale = max_stale
        self._wait_timeout = wait_timeout
        self._max_entries = max_entries
        # A run in a final state does not move on by itself (only an operator's retry moves it):
        # its state is re-read far less often.
        self._is_final = is_final
        self._final_ttl = min(max_stale, final_ttl if final_ttl is not None else ttl)
        self._entries: OrderedDict[str, _Entry[S]] = OrderedDict()
        self._flights: dict[str, _Flight[S]] = {}
        self._due: set[str] = set()
        self._refreshing = False
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefect-run-states")

    def get(self, run_id: str, not_before: float | None = None) -> S | None:
        """The run's state, read from Prefect at or after `not_before` (epoch seconds) when given."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(run_id)
        if entry is not None and entry.valid and (not_before is None or entry.read_at >= not_before):
            age = now - entry.read_mono
            final = entry.state is not None and self._is_final(entry.state)
            if age < (self._final_ttl if final else self._ttl):
                return entry.state
            if age < self._max_stale:
                self._schedule(run_id)
                return entry.state
        return self._read_now(run_id, not_before)

    def put(self, run_id: str, state: S | None, read_at: float | None = None) -> None:
        """What the caller just learnt from Prefect (e.g. the state of a run it created)."""
        wall, mono = time.time(), time.monotonic()
        if read_at is not None:  # started earlier: age the entry by as much
            mono -= max(0.0, wall - read_at)
            wall = read_at
        with self._lock:
            self._store(run_id, _Entry(state, wall, mono))

    def forget(self, run_id: str) -> None:
        """The caller changed the run's state: the next read asks Prefect, and reads already under way are dropped."""
        with self._lock:
            self._entries[run_id] = _Entry(None, time.time(), time.monotonic(), valid=False)
            self._entries.move_to_end(run_id)
            self._flights.pop(run_id, None)  # later readers do not wait for a read started before

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _store(self, run_id: str, entry: _Entry[S]) -> None:
        current = self._entries.get(run_id)
        if current is not None and current.read_mono > entry.read_mono:
            return  # a read that started later already answered
        self._entries[run_id] = entry
        self._entries.move_to_end(run_id)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def _read_now(self, run_id: str, not_before: float | None) -> S | None:
        with self._lock:
            flight = self._flights.get(run_id)
            joined = flight is not None and (not_before is None or flight.started_at >= not_before)
            if not joined:
                flight = self._flights[run_id] = _Flight(started_at=time.time())
        assert flight is not None
        if joined:
            if flight.done.wait(self._wait_timeout):
                return flight.state
            return None
        mono = time.monotonic()
        try:
            flight.state = self._read_one(run_id)
        finally:
            with self._lock:
                self._store(run_id, _Entry(flight.state, flight.started_at, mono))
                if self._flights.get(run_id) is flight:
                    del self._flights[run_id]
            flight.done.set()
        return flight.state

    def _schedule(self, run_id: str) -> None:
        with self._lock:
            self._due.add(run_id)
            if self._refreshing:
                return
            self._refreshing = True
        try:
            self._executor.submit(self._refresh)
        except RuntimeError:  # shut down
            with self._lock:
                self._refreshing = False

    def _refresh(self) -> None:
        """Read every due run in one request, until none is due."""
        while True:
            with self._lock:
                due = sorted(self._due)
                self._due.clear()
                if not due:
                    self._refreshing = False  # under the lock that _schedule checks it with
                    return
            self._refresh_batch(due)

    def _refresh_batch(self, run_ids: Iterable[str]) -> None:
        ids = list(run_ids)
        wall, mono = time.time(), time.monotonic()
        try:
            states = self._read_many(ids)
        except Exception:  # read_many should not; if it does, keep serving what we have
            log.exception("refreshing %d flow run state(s) failed", len(ids))
            return
        with self._lock:
            for run_id in ids:
                self._store(run_id, _Entry(states.get(run_id), wall, mono))
