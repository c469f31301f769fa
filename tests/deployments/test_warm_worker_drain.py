"""SIGTERM drains a real warm worker process: no new run is taken, the runs in flight get the drain
period, it exits 0; a run still going at the end of the period is reported Crashed and reconciled."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.stack import Stack
from deployments.warm_worker import create_pool
from tests.faults.helpers import eventually

ENTRYPOINT = "tests/deployments/drain_flows.py:slow_publish"


@dataclass
class Pool:
    """A work pool of its own (no other test's scheduled runs in it) and a deployment of the slow flow."""

    stack: Stack
    name: str
    deployment_id: UUID

    def submit(self, prefect: SyncPrefectClient, seconds: float) -> FlowRun:
        return prefect.create_flow_run_from_deployment(self.deployment_id, parameters={"seconds": seconds})

    def worker(self, tmp_path: Path, drain_seconds: float) -> subprocess.Popen[bytes]:
        """`python -m deployments.warm_worker` as Kubernetes starts it, on this pool."""
        env = {**self.stack.env, "PREFECT_WORKER_QUERY_SECONDS": "1"}
        argv = [sys.executable, "-m", "deployments.warm_worker", "--pool", self.name, "--threads", "4"]
        argv += ["--ledger", str(tmp_path / "ledger.json"), "--drain-seconds", f"{drain_seconds:g}"]
        log = (tmp_path / "worker.log").open("wb")
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture
def pool(prefect_server: Stack, request: pytest.FixtureRequest) -> Iterator[Pool]:
    name = f"drain-{request.node.name[-20:]}-{os.getpid()}"
    with temporary_settings({PREFECT_API_URL: prefect_server.config.prefect_api_url}):
        asyncio.run(create_pool(name))
    with SyncPrefectClient(prefect_server.config.prefect_api_url) as prefect:
        flow_id = prefect.create_flow_from_name("publish-service")
        deployment_id = prefect.create_deployment(
            flow_id=flow_id, name=name, work_pool_name=name, entrypoint=ENTRYPOINT, path=str(Path.cwd())
        )
    yield Pool(prefect_server, name, deployment_id)
    with SyncPrefectClient(prefect_server.config.prefect_api_url) as prefect:
        prefect.delete_deployment(deployment_id)
        prefect.delete_work_pool(name)


def state_of(prefect: SyncPrefectClient, run: FlowRun) -> StateType | None:
    state = prefect.read_flow_run(run.id).state
    return state.type if state else None


def running(prefect: SyncPrefectClient, run: FlowRun) -> Callable[[], bool]:
    return lambda: state_of(prefect, run) is StateType.RUNNING


def stop_and_time(worker: subprocess.Popen[bytes], timeout: float) -> tuple[int, float]:
    sent = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    try:
        code = worker.wait(timeout=timeout)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    return code, time.monotonic() - sent


def test_sigterm_lets_the_run_in_flight_finish_takes_no_new_run_and_exits_0(pool: Pool, tmp_path: Path) -> None:
    drain = 20.0
    with SyncPrefectClient(pool.stack.config.prefect_api_url) as prefect:
        in_flight = pool.submit(prefect, seconds=4)
        worker = pool.worker(tmp_path, drain)
        try:
            eventually(running(prefect, in_flight), 60, "running flow run")
            worker.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            log_file = tmp_path / "worker.log"
            eventually(lambda: "SIGTERM: taking no new runs" in log_file.read_text(errors="replace"), 5, "drain")
            after_signal = pool.submit(prefect, seconds=0)  # its Scheduled event would wake a worker at once
            code = worker.wait(timeout=drain + 10)
            took = time.monotonic() - sent
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        log = (tmp_path / "worker.log").read_text(errors="replace")
        assert code == 0, log[-3000:]
        assert took < drain, f"exited {took:.1f} s after SIGTERM"
        assert state_of(prefect, in_flight) is StateType.COMPLETED
        assert state_of(prefect, after_signal) is StateType.SCHEDULED, "a run was taken after SIGTERM"
        assert (tmp_path / "ledger.json").read_text() == "[]"
        prefect.delete_flow_run(after_signal.id)


def test_a_run_longer_than_the_drain_is_reported_crashed_and_reconciled(pool: Pool, tmp_path: Path) -> None:
    drain = 2.0
    with SyncPrefectClient(pool.stack.config.prefect_api_url) as prefect:
        reconcile = prefect.read_deployment_by_name("reconcile-publications/reconcile-publications")
        too_long = pool.submit(prefect, seconds=120)
        worker = pool.worker(tmp_path, drain)
        try:
            eventually(running(prefect, too_long), 60, "running flow run")
            since = prefect.read_flow_run(too_long.id).state.timestamp  # type: ignore[union-attr]
            code, took = stop_and_time(worker, timeout=drain + 15)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        log = (tmp_path / "worker.log").read_text(errors="replace")
        assert code == 0, log[-3000:]
        assert took < drain + 5, f"exited {took:.1f} s after SIGTERM"
        state = prefect.read_flow_run(too_long.id).state
        assert state is not None and state.type is StateType.CRASHED, state
        assert "drained for 2 s" in (state.message or "")
        assert (tmp_path / "ledger.json").read_text() == "[]"  # reported: nothing left for a restart

        def reconcile_runs() -> list[FlowRun]:
            runs = prefect.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[reconcile.id])),
                flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=since)),
            )  # not the runs of its schedule: the ones a trigger made after the crash
            return [run for run in runs if not run.auto_scheduled and run.created and run.created > since]

        # The reconcile deployment's trigger on a crashed publish run schedules the compensation.
        eventually(reconcile_runs, 45, "reconcile run triggered by the crash")
