"""Prefect flow-run states as a status report shows them: from memory, refreshed in the background.

Status reports are polled (providers, dashboards, the e2e tests) while the Prefect server is at
its busiest. Asking it for the run state inside the request put a network call to a CPU-bound
server, and its latency, into every answer; waiting for it held a thread of the API's pool, and
a slow server soon held them all. Our database is the source of truth for the phases; Prefect
only contributes the run's state, and that may be a moment old. So a read never waits:

- it answers with the state last read (None for a run not read yet);
- an entry older than `ttl` (a final state: `final_ttl`), or read before `not_before` (the
  caller's record says the run moved on after that: see api/status/record.py; such a state is
  not served, the answer is None), is marked due, and one background thread reads every due run
  in one request (a filter on their ids), at once and again as long as runs become due.

While a run is polled its state is at most `ttl` plus one Prefect round trip old, and Prefect
sees one request per round for all polled runs together instead of one per status read. A state
that cannot be read (Prefect down or slow) keeps its last value until a read succeeds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from cachetools import LRUCache

log = logging.getLogger("marketplace.orchestrator")

S = TypeVar("S")


@dataclass
class _Entry(Generic[S]):
    state: S | None
    read_at: float  # wall clock (time.time()) when the read started: compared with record timestamps
    read_mono: float  # the same moment on the monotonic clock: the entry's age


class RunStateCache(Generic[S]):
    """States by flow run id; `read_many` asks Prefect for several runs at once (and never raises)."""

    def __init__(
        self,
        read_many: Callable[[list[str]], dict[str, S | None]],
        *,
        ttl: float,
        max_entries: int = 10_000,
        is_final: Callable[[S], bool] = lambda _state: False,
        final_ttl: float | None = None,
    ) -> None:
        self._read_many = read_many
        self._ttl = ttl
        # A run in a final state does not move on by itself (only an operator's retry moves it):
        # its state is read again far less often.
        self._is_final = is_final
        self._final_ttl = final_ttl if final_ttl is not None else ttl
        self._entries: LRUCache[str, _Entry[S]] = LRUCache(max_entries)
        self._due: set[str] = set()
        self._refreshing = False
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefect-run-states")

    def get(self, run_id: str, not_before: float | None = None) -> S | None:
        """The run's state as last read; a stale one is read again in the background and served
        meanwhile. One read before `not_before` (epoch seconds) is not served: None (unknown)."""
        with self._lock:
            entry = self._entries.get(run_id)
        if entry is None:
            self._schedule(run_id)
            return None
        predates = not_before is not None and entry.read_at < not_before
        if predates or self._aged(entry):
            self._schedule(run_id)
        return None if predates else entry.state

    def put(self, run_id: str, state: S | None, read_at: float | None = None) -> None:
        """What the caller just learnt from Prefect (e.g. the state of a run it created)."""
        wall, mono = time.time(), time.monotonic()
        if read_at is not None:  # started earlier: age the entry by as much
            mono -= max(0.0, wall - read_at)
            wall = read_at
        with self._lock:
            self._store(run_id, _Entry(state, wall, mono))

    def forget(self, run_id: str) -> None:
        """The caller changed the run's state: read it again now (the old state is served until then)."""
        with self._lock:
            entry = self._entries.get(run_id)
            if entry is not None:
                entry.read_at, entry.read_mono = 0.0, float("-inf")
        self._schedule(run_id)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _aged(self, entry: _Entry[S]) -> bool:
        final = entry.state is not None and self._is_final(entry.state)
        return time.monotonic() - entry.read_mono >= (self._final_ttl if final else self._ttl)

    def _store(self, run_id: str, entry: _Entry[S]) -> None:
        current = self._entries.get(run_id)
        if current is not None and current.read_mono > entry.read_mono:
            return  # a read that started later already answered
        self._entries[run_id] = entry

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

    def _refresh_batch(self, run_ids: list[str]) -> None:
        wall, mono = time.time(), time.monotonic()
        try:
            states = self._read_many(run_ids)
        except Exception:  # read_many should not; if it does, keep serving what we have
            log.exception("refreshing %d flow run state(s) failed", len(run_ids))
            states = {}
        with self._lock:
            for run_id in run_ids:
                if run_id in states:
                    self._store(run_id, _Entry(states[run_id], wall, mono))
                else:  # Prefect did not tell (down, slow, no such run): keep the last state, ask again after ttl
                    last = self._entries.get(run_id)
                    self._store(run_id, _Entry(last.state if last else None, last.read_at if last else 0.0, mono))
