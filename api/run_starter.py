"""Starts the flow runs that accepted requests owe (storage/repositories/run_requests.py).

One thread per API process creates the runs one at a time, oldest first, and retries with
exponential backoff while Prefect is down or busy. One starter at a time is what a Prefect server
on SQLite can take: concurrent creates lock its database and fail, while a single client with
retries drains a burst (measured: DESIGN.md). Every attempt carries the request's idempotency key,
so a start retried after a timeout, or after this process died between Prefect's answer and our
commit, returns the run that was created instead of a second one.

On PostgreSQL a request is locked (FOR UPDATE SKIP LOCKED) while its start is attempted, so the
starters of several API processes share the queue. On SQLite no transaction is held across the
call to Prefect (it would hold the database's only write lock): there is one API process.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from sqlalchemy.orm import Session

from core.errors import UpstreamUnavailableError
from storage.database import session_scope
from storage.models import FlowRunRequest, utcnow
from storage.repositories import run_requests, versions
from storage.repositories.run_requests import RunSpec

log = logging.getLogger("marketplace.run_starter")


@dataclass(frozen=True)
class StarterPolicy:
    """How often the queue is looked at, and how retries back off."""

    poll_seconds: float = 1.0  # requests written by other processes, retries coming due
    first_retry_seconds: float = 0.5
    max_retry_seconds: float = 30.0
    quiet_seconds: float = 0.05  # a burst of submissions is over once none came for this long ...
    max_hold_seconds: float = 1.0  # ... or this long after the starter was first woken for it
    concurrency: int = 1  # runs created at once (threads); with row locks only: see RunStarter


class RunCreator(Protocol):
    """What creates a flow run in Prefect (api/orchestrator.py `Orchestrator`); raises UpstreamUnavailableError."""

    def create_run(self, run: RunSpec) -> str: ...


class RunStarter:
    """Daemon threads draining the run requests into Prefect; `wake()` after a commit that added one.

    A Prefect server on PostgreSQL creates runs concurrently, and a burst of a hundred runs created one
    at a time waited seconds for the last of them: there, `concurrency` threads each take the next
    unlocked request. Without row locks (SQLite: the embedded default, whose Prefect is on SQLite
    too) there is one thread, one create at a time.
    """

    def __init__(self, orch: RunCreator, policy: StarterPolicy, *, lock_rows: bool) -> None:
        self._orch = orch
        self._policy = policy
        self._lock_rows = lock_rows
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_wake = 0.0

    def start(self) -> None:
        count = max(1, self._policy.concurrency) if self._lock_rows else 1
        for n in range(count):
            thread = threading.Thread(target=self._loop, name=f"run-starter-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wakeup.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def wake(self) -> None:
        """A request was committed: look at the queue now rather than at the next poll."""
        self._last_wake = time.monotonic()
        self._wakeup.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wakeup.clear()  # before draining: a wake-up that comes meanwhile is not lost
            self._let_burst_pass()
            try:
                self.drain()
            except Exception:  # the database is down: the next poll tries again
                log.exception("run starter: cannot read the queue")
            self._wakeup.wait(self._policy.poll_seconds)

    def _let_burst_pass(self) -> None:
        """While submissions keep coming, let them: start the burst's runs once it pauses for `quiet_seconds`
        (at most `max_hold_seconds` after the wake-up). Starting runs costs this process CPU and sets the
        worker and Prefect working on the same cores and database: during a burst of 50 submissions on
        SQLite that doubled the answers' p95. A lone submission waits `quiet_seconds` for its run."""
        held_since = time.monotonic()
        while not self._stopping.is_set():
            now = time.monotonic()
            quiet_for = now - self._last_wake
            if quiet_for >= self._policy.quiet_seconds or now - held_since >= self._policy.max_hold_seconds:
                return
            self._stopping.wait(self._policy.quiet_seconds - quiet_for)

    def drain(self) -> int:
        """Start every due request, one at a time; returns how many were started."""
        started = 0
        while not self._stopping.is_set():
            outcome = self.start_next()
            if outcome is None:
                return started
            started += outcome
        return started

    def start_next(self) -> bool | None:
        """Attempt the oldest due request: True started, False failed (retried later), None none due."""
        if self._lock_rows:
            with session_scope() as session:
                request = run_requests.next_due(session, lock=True)
                if request is None:
                    return None
                return self._attempt(session, request, _spec_of(request))
        with session_scope() as session:
            request = run_requests.next_due(session, lock=False)
            if request is None:
                return None
            request_id, spec = request.id, _spec_of(request)
        flow_run_id, error = self._create(spec)
        with session_scope() as session:
            current = run_requests.get(session, request_id)
            if current is None or current.status != run_requests.QUEUED:
                return False
            return self._record(session, current, flow_run_id, error)

    def _attempt(self, session: Session, request: FlowRunRequest, spec: RunSpec) -> bool:
        flow_run_id, error = self._create(spec)
        return self._record(session, request, flow_run_id, error)

    def _create(self, spec: RunSpec) -> tuple[str | None, str | None]:
        try:
            return self._orch.create_run(spec), None
        except UpstreamUnavailableError as exc:
            return None, str(exc)

    def _record(self, session: Session, request: FlowRunRequest, flow_run_id: str | None, error: str | None) -> bool:
        """The run's id where the request's records point to it, or the failed attempt and the next one.
        An attempt cut short by shutdown (the client closed under it) is not counted: the request stays
        due for the next process."""
        if flow_run_id is None and self._stopping.is_set():
            return False
        if flow_run_id is not None:
            run_requests.mark_started(session, request, flow_run_id)
            if request.version_id is not None:
                versions.set_flow_run(session, request.version_id, flow_run_id)
            log.info("started %s run %s (%s)", request.kind, flow_run_id, request.run_name or request.deployment)
            return True
        delay = self.retry_delay(request.attempts + 1)
        run_requests.mark_attempt_failed(
            session, request, error or "unknown error", utcnow() + timedelta(seconds=delay)
        )
        log.warning(
            "could not start %s run (attempt %d, retry in %.1f s): %s",
            request.run_name or request.kind,
            request.attempts,
            delay,
            error,
        )
        return False

    def retry_delay(self, attempts: int) -> float:
        """Exponential from the first retry delay up to the cap, with up to 20 % random spread."""
        base = min(self._policy.max_retry_seconds, self._policy.first_retry_seconds * 2 ** (attempts - 1))
        return float(base * (1 + 0.2 * random.random()))  # noqa: S311 - spread, not security


def _spec_of(request: FlowRunRequest) -> RunSpec:
    return RunSpec(
        kind=request.kind,
        deployment=request.deployment,
        parameters=dict(request.parameters),
        idempotency_key=request.idempotency_key,
        service_id=request.service_id,
        version_id=request.version_id,
        run_name=request.run_name,
        tags=tuple(request.tags or ()),
        request_id=request.request_id,
        traceparent=request.traceparent,
    )
