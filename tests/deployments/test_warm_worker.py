"""The warm worker's claim path, against a real Prefect server."""

from __future__ import annotations

import asyncio
from uuid import uuid4

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.responses import WorkerFlowRunResponse
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.workers.base import BaseWorker

from deployments.stack import Stack
from deployments.warm_worker import WarmWorker


def scheduled(run: FlowRun) -> list[WorkerFlowRunResponse]:
    return [WorkerFlowRunResponse(work_pool_id=uuid4(), work_queue_id=uuid4(), flow_run=run)]


def test_a_run_resumed_while_its_last_attempt_finishes_waits_for_the_next_poll(prefect_server: Stack) -> None:
    """A resume can make a run Scheduled again before the thread of its suspended attempt has
    returned its slot. Claiming it then must not end the worker's poll loop."""
    run = FlowRun(id=uuid4(), flow_id=uuid4(), name="resumed-quickly")

    async def claim() -> None:
        async with WarmWorker(work_pool_name="pool-unused", threads=2) as worker:
            worker.limiter.acquire_on_behalf_of_nowait(run.id)  # the earlier attempt, still finishing
            assert await worker._submit_scheduled_flow_runs(scheduled(run)) == []
            assert worker.limiter.borrowed_tokens == 1
            # What BaseWorker itself does with the same run: the error that stopped the worker.
            with pytest.raises(RuntimeError, match="already holding"):
                await BaseWorker._submit_scheduled_flow_runs(worker, scheduled(run))
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
            with_one_slot = len(await worker._get_scheduled_flow_runs())
            worker.limiter.acquire_on_behalf_of_nowait(uuid4())
            when_full = len(await worker._get_scheduled_flow_runs())
            return with_one_slot, when_full

    with temporary_settings({PREFECT_API_URL: prefect_server.config.prefect_api_url}):
        assert asyncio.run(poll()) == (1, 0)
