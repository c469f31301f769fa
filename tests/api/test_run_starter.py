"""The run starter's queue discipline, against the real database and a scripted orchestrator.

The orchestrator is handed to the starter (as the API does); here it is a small stand-in that answers
as Prefect would (a run id per idempotency key, or unavailable), so retries, backoff, ordering and
the records can be checked without timing a real server. The API and fault tests use real Prefect.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import timedelta

import pytest

from api import intake
from api.run_starter import RunStarter, StarterPolicy
from core.errors import UpstreamUnavailableError
from core.settings import PrefectSettings
from storage.database import get_engine, session_scope
from storage.models import utcnow
from storage.repositories import run_requests, services, versions
from storage.repositories.run_requests import RunSpec
from storage.repositories.services import Actor
from tests.support.specs import make_spec


class ScriptedPrefect:
    """Creates one run per idempotency key, like Prefect; unavailable for the first `outages` calls."""

    def __init__(self, outages: int = 0) -> None:
        self.outages = outages
        self.calls: list[str] = []
        self.runs: dict[str, str] = {}

    def create_run(self, run: RunSpec) -> str:
        self.calls.append(run.idempotency_key)
        if self.outages > 0:
            self.outages -= 1
            raise UpstreamUnavailableError("the orchestrator (Prefect) is unavailable; retry later")
        return self.runs.setdefault(run.idempotency_key, f"00000000-0000-0000-0000-{len(self.runs):012d}")


def submit(name: str) -> tuple[str, str]:
    spec = make_spec(name=name)
    with session_scope() as session:
        service = services.create_submitted(session, spec, Actor("acme", "provider"))
        version_id = versions.latest(session, service.id).id
        intake.owe(session, intake.publish_run(PrefectSettings(), service.id, version_id, spec))
    return service.id, version_id


def starter(prefect: ScriptedPrefect, **policy: float) -> RunStarter:
    lock_rows = get_engine().dialect.name == "postgresql"
    return RunStarter(prefect, StarterPolicy(**policy), lock_rows=lock_rows)


def test_owed_runs_are_started_oldest_first_and_recorded(database_url: str) -> None:
    prefect = ScriptedPrefect()
    submitted = [submit(f"svc-{i}") for i in range(3)]
    assert starter(prefect).drain() == 3
    assert prefect.calls == [f"publish-{version_id}" for _, version_id in submitted]
    with session_scope() as session:
        for service_id, version_id in submitted:
            run_id = prefect.runs[f"publish-{version_id}"]
            assert versions.get(session, version_id).flow_run_id == run_id
            assert services.get(session, service_id).flow_run_id == run_id
            request = run_requests.for_version(session, version_id)
            assert request is not None
            assert (request.status, request.attempts, request.flow_run_id) == ("started", 1, run_id)
        assert run_requests.backlog(session).queued == 0
    assert starter(prefect).drain() == 0, "nothing is started twice"


def test_a_failed_start_is_retried_after_a_growing_delay(database_url: str) -> None:
    prefect = ScriptedPrefect(outages=2)
    _, version_id = submit("svc-retried")
    runner = starter(prefect, first_retry_seconds=60, max_retry_seconds=600)
    assert runner.drain() == 0
    with session_scope() as session:
        request = run_requests.for_version(session, version_id)
        assert request is not None
        assert (request.status, request.attempts) == ("queued", 1)
        assert "unavailable" in (request.last_error or "")
        assert timedelta(seconds=59) < request.next_attempt_at - utcnow() <= timedelta(seconds=73)
        request.next_attempt_at = utcnow()  # as if the delay had passed
    assert runner.drain() == 0
    with session_scope() as session:
        request = run_requests.for_version(session, version_id)
        assert request is not None
        assert request.attempts == 2
        assert timedelta(seconds=119) < request.next_attempt_at - utcnow() <= timedelta(seconds=145)
        request.next_attempt_at = utcnow()
    assert runner.drain() == 1
    assert prefect.calls == [f"publish-{version_id}"] * 3, "every attempt with the same idempotency key"


@pytest.mark.parametrize("attempts", [1, 2, 3, 10, 20])
def test_retry_delays_double_up_to_the_cap(attempts: int) -> None:
    runner = RunStarter(
        ScriptedPrefect(), StarterPolicy(first_retry_seconds=0.5, max_retry_seconds=30), lock_rows=False
    )
    base = min(30.0, 0.5 * 2 ** (attempts - 1))
    assert base <= runner.retry_delay(attempts) <= base * 1.2


def test_a_burst_is_let_through_before_its_runs_start(database_url: str) -> None:
    """Woken by every submission, the starter waits for the burst to pause before starting runs."""
    prefect = ScriptedPrefect()
    runner = starter(prefect, quiet_seconds=0.3, max_hold_seconds=5, poll_seconds=30)
    runner.start()
    try:
        for i in range(4):
            submit(f"burst-{i}")
            runner.wake()
            time.sleep(0.1)
        assert prefect.calls == [], "no start while submissions keep coming"
        deadline = time.monotonic() + 5
        while len(prefect.calls) < 4:
            assert time.monotonic() < deadline, prefect.calls
            time.sleep(0.02)
    finally:
        runner.stop()


class SlowPrefect(ScriptedPrefect):
    """Takes a moment per create and remembers how many creates overlapped."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0

    def create_run(self, run: RunSpec) -> str:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(0.2)
            with self._lock:
                return super().create_run(run)
        finally:
            with self._lock:
                self.in_flight -= 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_with_row_locks_several_runs_are_created_at_once_and_none_twice(database_url: str) -> None:
    prefect = SlowPrefect()
    submitted = [submit(f"parallel-{i}") for i in range(8)]
    runner = starter(prefect, concurrency=4, quiet_seconds=0, poll_seconds=0.05)
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while len(prefect.runs) < 8:
            assert time.monotonic() < deadline, prefect.calls
            time.sleep(0.05)
    finally:
        runner.stop()
    assert sorted(prefect.calls) == sorted(f"publish-{version_id}" for _, version_id in submitted), "each once"
    assert prefect.most_in_flight > 1
    with session_scope() as session:
        assert run_requests.backlog(session).queued == 0


def test_a_run_is_created_with_its_requests_id_as_a_tag_and_its_trace_context(database_url: str) -> None:
    specs: list[RunSpec] = []

    class Recording(ScriptedPrefect):
        def create_run(self, run: RunSpec) -> str:
            specs.append(run)
            return super().create_run(run)

    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    spec = make_spec(name="svc-traced")
    with session_scope() as session:
        service = services.create_submitted(session, spec, Actor("acme", "provider"))
        version_id = versions.latest(session, service.id).id
        owed = intake.publish_run(PrefectSettings(), service.id, version_id, spec)
        intake.owe(session, dataclasses.replace(owed, request_id="req-42", traceparent=traceparent))
    untraced = submit("svc-untraced")  # outside a request: no id, no trace context
    assert starter(Recording()).drain() == 2
    traced, plain = specs
    assert (traced.request_id, traced.traceparent) == ("req-42", traceparent)
    assert traced.run_tags() == [*owed.tags, "request:req-42"]
    assert (plain.request_id, plain.traceparent, plain.version_id) == (None, None, untraced[1])
    assert plain.run_tags() == list(plain.tags)
