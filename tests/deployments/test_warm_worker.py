"""The warm worker's claim path, against a real Prefect server."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator
from uuid import UUID, uuid4

import pytest
from prefect import flow, task
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.responses import WorkerFlowRunResponse
from prefect.flow_runs import suspend_flow_run
from prefect.logging.handlers import APILogHandler
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Pending

from deployments.stack import Stack
from deployments.warm_worker import SharedSuspensionObserver, WarmWorker, _execute


def scheduled(run: FlowRun) -> list[WorkerFlowRunResponse]:
    return [WorkerFlowRunResponse(work_pool_id=uuid4(), work_queue_id=uuid4(), flow_run=run)]


def test_a_run_resumed_while_its_last_attempt_finishes_waits_for_the_next_poll(prefect_server: Stack) -> None:
    """A resume can make a run Scheduled again before the thread of its suspended attempt has
    returned its slot. Claiming it then must not end the worker's poll loop."""
    run = FlowRun(id=uuid4(), flow_id=uuid4(), name="resumed-quickly")

    async def claim() -> None:
        async with WarmWorker(work_pool_name="pool-unused", threads=2) as worker:
            worker.limiter.acquire_on_behalf_of_nowait(run.id)  # the earlier attempt, still finishing
            assert worker.take(scheduled(run)) == []
            assert worker.limiter.borrowed_tokens == 1
            # What a second claim of the same run would meet (BaseWorker's own submission makes
            # one): the error that stopped the worker.
            with pytest.raises(RuntimeError, match="already holding"):
                worker.limiter.acquire_on_behalf_of_nowait(run.id)
            worker.limiter.release_on_behalf_of(run.id)

    with temporary_settings({PREFECT_API_URL: prefect_server.config.prefect_api_url}):
        asyncio.run(claim())


def test_a_poll_asks_for_no_more_runs_than_free_slots_and_none_when_full(prefect_server: Stack) -> None:
    """Under a burst the pool holds far more scheduled runs than the worker can take."""
    with SyncPrefectClient(prefect_server.config.prefect_api_url) as prefect:
        deployment = prefect.read_deployment_by_name("publish-service/publish-service")
        for n in range(3):  # no worker runs in this stack: they stay scheduled
            prefect.create_flow_run_from_deployment(
                deployment.id, parameters={"service_id": f"s{n}", "version_id": "v"}
            )

    async def poll() -> tuple[int, int]:
        async with WarmWorker(work_pool_name=prefect_server.config.work_pool, threads=2) as worker:
            one_free = FlowRun(id=uuid4(), flow_id=uuid4(), name="running")
            worker.limiter.acquire_on_behalf_of_nowait(one_free.id)
            with_one_slot = len(await worker.scheduled_runs_for_free_slots())
            worker.limiter.acquire_on_behalf_of_nowait(uuid4())
            when_full = len(await worker.scheduled_runs_for_free_slots())
            return with_one_slot, when_full

    with temporary_settings({PREFECT_API_URL: prefect_server.config.prefect_api_url}):
        assert asyncio.run(poll()) == (1, 0)


@task
def one_step(n: int) -> int:
    time.sleep(0.1)
    return n


@flow
def steps(service_id: str, version_id: str) -> int:
    """`version_id` steps of 0.1 s: a run long enough to be suspended from outside."""
    return sum(one_step(n) for n in range(int(version_id)))


@pytest.fixture
def shared_observer(prefect_server: Stack) -> Iterator[SharedSuspensionObserver]:
    """The observer on an event loop of its own thread, as on the worker's loop in `serve`."""
    with temporary_settings({PREFECT_API_URL: prefect_server.config.prefect_api_url}):
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        observer = SharedSuspensionObserver()
        asyncio.run_coroutine_threadsafe(observer.__aenter__(), loop).result(30)
        try:
            with observer.installed():
                yield observer
        finally:
            APILogHandler().flush()  # the runs' logs, while the server is up (else sent at exit, to no one)
            asyncio.run_coroutine_threadsafe(observer.__aexit__(None, None, None), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)


def test_one_observer_watches_every_run_and_a_suspension_from_outside_stops_only_its_run(
    prefect_server: Stack, shared_observer: SharedSuspensionObserver
) -> None:
    with SyncPrefectClient(prefect_server.config.prefect_api_url) as prefect:
        deployment = prefect.read_deployment_by_name("publish-service/publish-service")
        long_run, short_run = (
            prefect.create_flow_run_from_deployment(deployment.id, parameters={"service_id": "s", "version_id": n})
            for n in ("100", "10")
        )
        threads = []
        for run in (long_run, short_run):
            prefect.set_flow_run_state(run.id, Pending())  # claimed, as the worker does before it starts a run
            # Each run on a thread of its own, with the test's Prefect settings (anyio's threads carry them too).
            thread = threading.Thread(target=contextvars.copy_context().run, args=(_execute, steps, run))
            thread.start()
            threads.append(thread)

        def states() -> dict[UUID, str | None]:
            runs = {r.id: prefect.read_flow_run(r.id) for r in (long_run, short_run)}
            return {i: r.state.name if r.state else None for i, r in runs.items()}

        deadline = time.monotonic() + 30
        while shared_observer.watched != {long_run.id, short_run.id}:
            assert time.monotonic() < deadline, f"both runs are watched by the one observer: {states()}"
            time.sleep(0.05)
        suspend_flow_run(flow_run_id=long_run.id)
        for thread in threads:
            thread.join(60)
            assert not thread.is_alive()

        assert states() == {long_run.id: "Suspended", short_run.id: "Completed"}
        finished_steps = prefect.read_task_runs()
        assert len([t for t in finished_steps if t.flow_run_id == long_run.id]) < 100, "stopped at a step boundary"
    assert shared_observer.watched == set()
