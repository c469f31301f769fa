"""A Prefect worker that runs flow runs in threads of one warm interpreter.

Prefect's process worker starts a new Python process for every flow run: importing Prefect,
SQLAlchemy, our tasks and policies again costs ~3 s of the ~4.5 s a publish took end to end,
and 2 cores run only a few such starts at once. This worker imports the flows once and runs
each flow run with `prefect.flow_engine.run_flow` on a thread of its own, so a run starts in
milliseconds and costs only the work it does. Every run is still an ordinary Prefect flow run
of a deployment: scheduled by the server, visible in the UI, paused/resumed, retried, logged.

Pickup is event-driven: the worker subscribes to the server's event stream and polls for
scheduled runs the moment a flow run enters `Scheduled` in its pool (a resume, a new submission),
with the ordinary poll every `PREFECT_WORKER_QUERY_SECONDS` as the safety net.

Trade-offs, the reason the process worker stays available (`MARKETPLACE_WORKER__MODE=process`):
- Isolation: runs share one interpreter: module globals, the SQLAlchemy pool, the GIL. A task
  that leaks memory or blocks the GIL in C code slows the others. Our tasks are I/O-bound
  (HTTP, SQL) and keep no global state beyond caches.
- Blast radius: if the process dies, every run in it dies with it. Runs send heartbeats; a
  Prefect automation marks a run whose heartbeats stop `Crashed`, and the reconcile deployment
  compensates it (the registry entry removed, the service failed) exactly as for a lost process.
- Cancellation of a *running* run cannot kill a thread: it is refused (scheduled runs, the only
  ones the platform cancels, are cancelled by the server before any worker takes them).

`python -m deployments.warm_worker --pool marketplace` starts it; `--create-pool` makes the pool.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib
import logging
import os
import pkgutil
import ssl
import types
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import anyio
import anyio.abc
import httpx
import prefect.client.orchestration as prefect_client_module
import prefect.flow_engine as prefect_flow_engine
from prefect import Flow
from prefect._flow_run_suspension import FlowRunSuspensionRequest, mark_flow_run_suspension_requested
from prefect._internal.observers import FlowRunSuspendingObserver
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import FlowRun, State
from prefect.client.schemas.responses import WorkerFlowRunResponse
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.exceptions import Abort, ObjectNotFound, Pause
from prefect.flow_engine import run_flow
from prefect.flows import load_flow_from_entrypoint
from prefect.logging.loggers import flow_run_logger
from prefect.workers.base import BaseJobConfiguration, BaseVariables, BaseWorker, BaseWorkerResult

import flows
from core.gc_pauses import freeze_startup_objects
from deployments.run_ledger import RunLedger, crash_orphans

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORKER_TYPE = "marketplace-warm"
log = logging.getLogger("marketplace.warm_worker")


class WarmJobConfiguration(BaseJobConfiguration):
    """Nothing to configure per run: the flows run in this process."""


class WarmVariables(BaseVariables):
    """No job variables: the flows run in this process."""


class WarmWorkerResult(BaseWorkerResult):
    """Status 0 when the engine finished the run (whatever its final state), 1 when it crashed."""


class WarmWorker(BaseWorker[WarmJobConfiguration, WarmVariables, WarmWorkerResult]):
    type = WORKER_TYPE
    job_configuration = WarmJobConfiguration
    job_configuration_variables = WarmVariables
    _description = "Runs flow runs in threads of one warm Python process (no process start per run)."
    _display_name = "Marketplace warm worker"

    def __init__(self, *args: Any, threads: int = 32, ledger: RunLedger | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("limit", threads)  # the worker takes no more runs than it has threads
        # No prefetch: a run starts in milliseconds here, and a run taken early would start
        # early (a retirement before its sunset).
        kwargs.setdefault("prefetch_seconds", 0)
        super().__init__(*args, **kwargs)
        self._threads = anyio.CapacityLimiter(threads)
        self._flows: dict[UUID, Flow[..., Any]] = {}
        self._ledger = ledger

    async def run(
        self,
        flow_run: FlowRun,
        configuration: WarmJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> WarmWorkerResult:
        flow = await self._flow_of(flow_run)
        if task_status is not None:
            task_status.started(os.getpid())  # the run's "infrastructure" is this process
        crashed = await anyio.to_thread.run_sync(_execute, flow, flow_run, limiter=self._threads)
        return WarmWorkerResult(status_code=1 if crashed else 0, identifier=str(os.getpid()))

    async def _get_scheduled_flow_runs(self) -> list[WorkerFlowRunResponse]:
        """At most as many scheduled runs as this worker has free slots, and no query when it has none.

        BaseWorker (Prefect 3.8.8) asks for every scheduled run of the pool on every poll and then
        takes as many as it can: under a burst of a hundred submissions each poll made the server
        serialize, and this worker parse, a hundred runs it could not take. The server's endpoint
        takes a `limit`; the client method does not expose it, so the request is made here.
        """
        free = int(self._limiter.available_tokens) if self._limiter is not None else None
        if free is not None and free < 1:
            return []
        body: dict[str, Any] = {
            "scheduled_before": (datetime.now(UTC) + timedelta(seconds=int(self._prefetch_seconds))).isoformat()
        }
        if free is not None:
            body["limit"] = free
        if self._work_queues:
            body["work_queue_names"] = sorted(self._work_queues)
        try:
            response = await self.client.request(
                "POST",
                "/work_pools/{name}/get_scheduled_flow_runs",
                path_params={"name": self._work_pool_name},
                json=body,
            )
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:  # the pool is created on the next heartbeat, as BaseWorker has it
                return []
            raise
        return WorkerFlowRunResponse.model_validate_list(response.json())

    async def _submit_scheduled_flow_runs(self, flow_run_response: list[WorkerFlowRunResponse]) -> list[FlowRun]:
        """Leave out runs whose previous attempt still holds a slot here; the next poll takes them.

        A run resumed moments after it suspended is `Scheduled` again while the thread of its
        earlier attempt may still be finishing (the engine reports the pause, flushes logs). The
        slot is held on behalf of the run id, and anyio refuses a second token for the same
        borrower with a RuntimeError that BaseWorker does not catch: it would end the poll loop,
        and with it the worker.
        """
        borrowing = self._limiter.statistics().borrowers if self._limiter else ()
        free = [entry for entry in flow_run_response if entry.flow_run.id not in borrowing]
        return await super()._submit_scheduled_flow_runs(free)

    async def _submit_run(self, flow_run: FlowRun) -> None:
        """Claim the run (Scheduled → Pending) and start it on a thread: nothing more.

        BaseWorker's own submission (Prefect 3.8.8) also re-reads the deployment, templates a
        job configuration, labels the run, proposes `Submitting` and records an infrastructure
        pid: ~0.3 s of API calls that buy nothing when the "infrastructure" is a thread of this
        process. The claim and the release of the concurrency slot are kept exactly as there.
        """
        try:
            if await self._propose_pending_state(flow_run):
                assert self._runs_task_group is not None
                if self._ledger is not None:
                    self._ledger.take(flow_run.id)
                self._runs_task_group.start_soon(self._run_and_release, flow_run)
            else:
                self._release_limit_slot(flow_run.id)
        except BaseException:
            self._release_limit_slot(flow_run.id)
            raise
        finally:
            self._submitting_flow_run_ids.discard(flow_run.id)
            if self._cancelling_observer is not None:
                self._cancelling_observer.remove_in_flight_flow_run_id(flow_run.id)

    async def _run_and_release(self, flow_run: FlowRun) -> None:
        try:
            flow = await self._flow_of(flow_run)
            crashed = await anyio.to_thread.run_sync(_execute, flow, flow_run, limiter=self._threads)
        except Exception as exc:
            self.get_flow_run_logger(flow_run).exception("could not start flow run %s", flow_run.id)
            await self._propose_crashed_state(flow_run, f"the warm worker could not run it: {exc}")
        else:
            if crashed:
                await self._propose_crashed_state(flow_run, "the flow engine crashed (see the run's logs)")
        finally:
            if self._ledger is not None:
                self._ledger.release(flow_run.id)
            self._release_limit_slot(flow_run.id)

    async def kill_infrastructure(
        self, infrastructure_pid: str, configuration: WarmJobConfiguration, grace_seconds: int = 30
    ) -> None:
        """A running run shares this process: killing it would kill every other run."""
        raise NotImplementedError("the warm worker cannot stop a running flow run (it runs in a shared process)")

    async def _flow_of(self, flow_run: FlowRun) -> Flow[..., Any]:
        """The deployment's flow, imported once per deployment and kept."""
        if flow_run.deployment_id is None:
            raise ValueError(f"flow run {flow_run.id} has no deployment; the warm worker runs deployments only")
        flow = self._flows.get(flow_run.deployment_id)
        if flow is None:
            deployment = await self.client.read_deployment(flow_run.deployment_id)
            if not deployment.entrypoint:
                raise ValueError(f"deployment {deployment.name} has no entrypoint")
            flow = self._flows[flow_run.deployment_id] = load_entrypoint(deployment.entrypoint)
        return flow


class _SharedVerifiedContexts(types.ModuleType):
    """The `ssl` module as Prefect's client module sees it, except that a *verifying* context
    for a given CA file is built once and shared.

    Prefect 3.8.8 builds `ssl.create_default_context(cafile=certifi.where())` for every client it
    constructs (even for an http:// API), and the engine constructs several per flow run: loading
    the CA bundle each time was the largest single cost of starting a run in a warm process.
    An SSLContext is safe to share across threads and connections. Contexts created any other
    way (e.g. the one Prefect then switches to CERT_NONE) are still created fresh.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(ssl, name)

    @staticmethod
    def create_default_context(
        purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH,
        *,
        cafile: str | None = None,
        capath: str | None = None,
        cadata: str | bytes | None = None,
    ) -> ssl.SSLContext:
        if cafile and capath is None and cadata is None and purpose == ssl.Purpose.SERVER_AUTH:
            return _verified_context(cafile)
        return ssl.create_default_context(purpose, cafile=cafile, capath=capath, cadata=cadata)


@functools.lru_cache(maxsize=8)
def _verified_context(cafile: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


def share_prefect_client_ssl_contexts() -> None:
    prefect_client_module.ssl = _SharedVerifiedContexts("ssl")  # type: ignore[attr-defined]


def load_entrypoint(entrypoint: str) -> Flow[..., Any]:
    """`flows/publish.py:publish_service` → the flow object of the *imported* module `flows.publish`.

    Importing by module name (not by file path) keeps one copy of each module in the process, so
    flows share the caches and connection pools every module-level object holds.
    """
    path, _, name = entrypoint.partition(":")
    file = (PROJECT_ROOT / path).resolve()
    if file.suffix == ".py" and file.is_relative_to(PROJECT_ROOT):
        module = importlib.import_module(".".join(file.relative_to(PROJECT_ROOT).with_suffix("").parts))
        flow = getattr(module, name)
        if isinstance(flow, Flow):
            return flow
    return load_flow_from_entrypoint(entrypoint)


def _execute(flow: Flow[..., Any], flow_run: FlowRun) -> bool:
    """Run one flow run to its end on this thread; True when the engine itself crashed.

    The engine records every outcome on the server before it raises: a `Pause` is the run
    suspending (the approval wait; a resume schedules it again), an `Abort` is orchestration
    refusing it, an Exception is the flow failing. Only anything else is a crash.
    """
    logger = flow_run_logger(flow_run)
    try:
        run_flow(flow, flow_run=flow_run, return_type="state", error_logger=cast(logging.Logger, logger))
    except (Pause, Abort):
        pass
    except Exception:
        logger.debug("flow run %s raised after recording its failure", flow_run.id, exc_info=True)
    except BaseException:
        logger.exception("the flow engine crashed running %s", flow_run.id)
        return True
    return False


class SharedSuspensionObserver:
    """One watch for suspensions requested from outside a run, for every run of this process.

    A running flow run can be suspended from outside (`suspend_flow_run(flow_run_id=...)`, the
    UI); the engine then stops it at its next task. To notice, Prefect 3.8.8's engine starts for
    every flow run of a deployment a thread with an event loop of its own, a client, a read of
    the run and a websocket subscription to the server's event stream (which the server answers
    with a backfill query): per run, the same job. Its FlowRunSuspendingObserver watches any
    number of runs, so here one, on the worker's event loop, serves them all
    (`prefect.flow_engine.observe_flow_run_suspension` is replaced while the worker runs).
    """

    def __init__(self) -> None:
        self._observer: FlowRunSuspendingObserver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._requests: dict[UUID, FlowRunSuspensionRequest] = {}

    async def __aenter__(self) -> SharedSuspensionObserver:
        self._loop = asyncio.get_running_loop()
        self._observer = FlowRunSuspendingObserver(on_suspended=self._suspended)
        await self._observer.__aenter__()  # type: ignore[no-untyped-call]  # untyped in Prefect 3.8.8
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._observer is not None:
            await self._observer.__aexit__(*exc_info)
        self._observer = self._loop = None

    @property
    def watched(self) -> set[UUID]:
        return set(self._requests)

    def _suspended(self, flow_run_id: UUID, state: State) -> None:
        # As the engine's own observer does: the request the run registered, else the one it passed.
        if not mark_flow_run_suspension_requested(flow_run_id, state) and (req := self._requests.get(flow_run_id)):
            req.mark_requested(state)

    @contextlib.contextmanager
    def observe(
        self, flow_run_id: UUID, suspension_request: FlowRunSuspensionRequest, polling_interval: float = 10
    ) -> Iterator[None]:
        """The engine's `observe_flow_run_suspension`, called on a run's thread: ready once the
        run's current state is known (a run already suspended is seen at once), as there."""
        observer, loop = self._observer, self._loop
        if observer is None or loop is None:
            raise RuntimeError("the shared suspension observer is not running")
        self._requests[flow_run_id] = suspension_request
        try:
            asyncio.run_coroutine_threadsafe(observer.watch_flow_run_id(flow_run_id), loop).result()
            yield
        finally:
            self._requests.pop(flow_run_id, None)
            loop.call_soon_threadsafe(observer.remove_in_flight_flow_run_id, flow_run_id)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Runs started meanwhile by `prefect.flow_engine` use this observer instead of their own."""
        original = getattr(prefect_flow_engine, _ENGINE_OBSERVER)
        setattr(prefect_flow_engine, _ENGINE_OBSERVER, self.observe)
        try:
            yield
        finally:
            setattr(prefect_flow_engine, _ENGINE_OBSERVER, original)


# What the engine calls for each run (imported into prefect.flow_engine by name, so replaced there).
_ENGINE_OBSERVER = "observe_flow_run_suspension"


async def wake_on_scheduled_runs(worker: WarmWorker, started: anyio.Event) -> None:
    """Poll at once whenever a flow run becomes Scheduled (a submission, a resume, a retry).

    Bursts coalesce: one poll picks up every run scheduled so far, so a poll already running
    when events arrive is followed by exactly one more.
    """
    await started.wait()
    kicked = anyio.Event()

    async def poller() -> None:
        nonlocal kicked
        while True:
            await kicked.wait()
            kicked = anyio.Event()
            try:
                await worker.get_and_submit_flow_runs()
            except Exception:
                log.exception("event-driven poll failed; the periodic poll continues")

    scheduled = EventFilter(event=EventNameFilter(name=["prefect.flow-run.Scheduled"]))
    async with anyio.create_task_group() as group:
        group.start_soon(poller)
        while True:
            try:
                async with get_events_subscriber(filter=scheduled) as subscriber:
                    async for _event in subscriber:
                        kicked.set()
            except Exception as exc:  # the stream dropped (server restart): the periodic poll covers
                log.warning("event stream lost (%s); reconnecting in 1 s", exc)
                await anyio.sleep(1)


class _WithoutThreadTimeoutWarning(logging.Filter):
    """Prefect warns on every task with a timeout that runs on a thread (here: all of them) that
    the timeout cannot interrupt blocking calls. Known and accepted: each blocking call of ours
    carries its own timeout (HTTP clients, database connect and statement timeouts)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Timeout of") and "running in a worker thread" in message)


def preload_flows() -> None:
    """Import every flow module now rather than at the first run of each deployment: that run does
    not wait for the imports, and they are frozen with the rest of start-up (core/gc_pauses.py)."""
    for module in pkgutil.iter_modules(flows.__path__):
        importlib.import_module(f"{flows.__name__}.{module.name}")


async def serve(pool: str, threads: int, ledger_path: Path | None = None) -> None:
    share_prefect_client_ssl_contexts()
    preload_flows()
    freeze_startup_objects()
    logging.getLogger("prefect.task_runs").addFilter(_WithoutThreadTimeoutWarning())
    ledger = RunLedger(ledger_path) if ledger_path else None
    if ledger is not None:  # runs a predecessor held when it died: crashed now, not after the heartbeat timeout
        async with get_client() as client:
            await crash_orphans(client, ledger)
    worker = WarmWorker(work_pool_name=pool, threads=threads, ledger=ledger, name=f"warm-{os.getpid()}")
    started = anyio.Event()

    def printer(message: str) -> None:  # BaseWorker.start reports "Worker '...' started!" once set up
        log.info(message)
        if message.endswith("started!"):
            started.set()

    async with SharedSuspensionObserver() as suspensions, anyio.create_task_group() as group:
        with suspensions.installed():
            group.start_soon(wake_on_scheduled_runs, worker, started)
            await worker.start(printer=printer)
            group.cancel_scope.cancel()


async def create_pool(pool: str) -> None:
    """Create the work pool of this worker type (idempotent; `prefect deploy` runs after it)."""
    template = WarmWorker.get_default_base_job_template()
    async with get_client() as client:
        try:
            existing = await client.read_work_pool(pool)
        except ObjectNotFound:
            existing = None
        if existing is not None and existing.type == WORKER_TYPE:
            return
        if existing is not None:  # a pool of another worker type (the process worker's): replace it
            log.info("replacing work pool %s of type %s", pool, existing.type)
            await client.delete_work_pool(pool)
        await client.create_work_pool(WorkPoolCreate(name=pool, type=WORKER_TYPE, base_job_template=template))


def main() -> None:
    parser = argparse.ArgumentParser(description="Run Prefect flow runs in threads of this process.")
    parser.add_argument("--pool", required=True, help="work pool to take runs from")
    parser.add_argument("--threads", type=int, default=32, help="flow runs at once")
    parser.add_argument("--create-pool", action="store_true", help="create the work pool and exit")
    parser.add_argument(
        "--ledger", type=Path, help="file of the runs held (a restarted worker reports its predecessor's as crashed)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s - %(message)s")
    if args.create_pool:
        asyncio.run(create_pool(args.pool))
        return
    asyncio.run(serve(args.pool, args.threads, args.ledger))


if __name__ == "__main__":
    main()
