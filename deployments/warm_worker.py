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

Shutdown drains (`serve`): on SIGTERM or SIGINT the worker stops taking runs, lets the runs in
flight finish or suspend for up to `MARKETPLACE_WORKER__DRAIN_SECONDS`, and exits 0. A run still
going at the end of that period is reported `Crashed` before the process exits, so the reconcile
deployment compensates it at once; were that report lost, the heartbeat automation marks it later.

It overrides only public methods of BaseWorker; the few Prefect internals it needs (a shared
suspension observer, shared TLS contexts for Prefect's clients) are in deployments/prefect_compat,
whose version check it runs first (docs/prefect-upgrade.md).

`python -m deployments.warm_worker --pool marketplace` starts it; `--create-pool` makes the pool.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import pkgutil
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import anyio
import anyio.abc
import httpx
from prefect import Flow
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
from prefect.states import Crashed, Pending
from prefect.utilities.engine import propose_state
from prefect.utilities.urls import url_for
from prefect.workers.base import BaseJobConfiguration, BaseVariables, BaseWorker, BaseWorkerResult

import flows
from core.gc_pauses import freeze_startup_objects
from core.settings import get_settings
from deployments.prefect_compat import require_supported_prefect
from deployments.prefect_compat.client_tls import share_prefect_client_ssl_contexts
from deployments.prefect_compat.suspension import SharedSuspensionObserver
from deployments.run_ledger import RunLedger, crash_orphans

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORKER_TYPE = "marketplace-warm"
# Each flow run that enters Scheduled (a submission, a resume, a retry) wakes the worker's poll.
SCHEDULED_EVENT = "prefect.flow-run.Scheduled"
log = logging.getLogger("marketplace.warm_worker")

__all__ = [
    "SharedSuspensionObserver",
    "WarmWorker",
    "create_pool",
    "load_entrypoint",
    "main",
    "run_until_stopped",
    "serve",
]


class WarmJobConfiguration(BaseJobConfiguration):
    """Nothing to configure per run: the flows run in this process."""


class WarmVariables(BaseVariables):
    """No job variables: the flows run in this process."""


class WarmWorkerResult(BaseWorkerResult):
    """Status 0 when the engine finished the run (whatever its final state), 1 when it crashed."""


class WarmWorker(BaseWorker[WarmJobConfiguration, WarmVariables, WarmWorkerResult]):
    """A BaseWorker that claims and runs flow runs itself, through BaseWorker's public hooks only.

    BaseWorker's poll loop calls `get_and_submit_flow_runs`, its heartbeat loop keeps the pool and
    the worker registered, `setup`/`teardown` bracket its life: this worker overrides those public
    methods (and `run`, `kill_infrastructure`, `get_description`, `is_worker_still_polling`) and
    no private one. Its own query, claim and start replace BaseWorker's (see
    `get_and_submit_flow_runs`); tests/deployments/test_prefect_contract.py pins the hooks.
    """

    type = WORKER_TYPE
    job_configuration = WarmJobConfiguration
    job_configuration_variables = WarmVariables

    def __init__(
        self,
        work_pool_name: str,
        work_queues: list[str] | None = None,
        *,
        threads: int = 32,
        ledger: RunLedger | None = None,
        wake_on_events: bool = False,
        prefetch_seconds: float | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("limit", threads)  # the worker takes no more runs than it has threads
        # No prefetch: a run starts in milliseconds here, and a run taken early would start
        # early (a retirement before its sunset).
        prefetch = 0 if prefetch_seconds is None else prefetch_seconds
        super().__init__(work_pool_name, work_queues, prefetch_seconds=prefetch, **kwargs)
        self._pool_name = work_pool_name
        self._queue_names = sorted(work_queues or [])
        self._lookahead = timedelta(seconds=int(prefetch))
        self._threads = anyio.CapacityLimiter(threads)
        self._flows: dict[UUID, Flow[..., Any]] = {}
        self._ledger = ledger
        self._wake_on_events = wake_on_events
        self._tasks: anyio.abc.TaskGroup | None = None  # the runs and the wake-up loop
        self._wake_scope: anyio.CancelScope | None = None
        self._last_poll = time.monotonic()
        self._draining = False  # set once a shutdown was asked for: no new runs from then on
        self._in_flight: dict[UUID, FlowRun] = {}  # the runs this worker holds a slot for

    @classmethod
    def get_description(cls) -> str:
        return "Runs flow runs in threads of one warm Python process (no process start per run)."

    async def setup(self) -> None:
        """BaseWorker's set-up (client, pool, heartbeat), then this worker's own task group: it
        holds the runs this worker starts and, with `wake_on_events`, the loop that polls on each
        Scheduled event (so that loop runs exactly while the worker can take runs)."""
        await super().setup()
        self._tasks = anyio.create_task_group()
        await self._tasks.__aenter__()
        if self._wake_on_events:
            self._wake_scope = anyio.CancelScope()
            self._tasks.start_soon(self._wake_on_scheduled_runs, self._wake_scope)

    async def teardown(self, *exc_info: Any) -> None:
        """The wake-up loop stops; the runs in flight end (threads cannot be cancelled) before
        BaseWorker closes the client they report through, as BaseWorker's own runs do. A drained
        worker stops by cancellation of its loops; nothing here may be shielded from it: both task
        groups were entered outside any new cancel scope and must be exited outside one too."""
        if self._wake_scope is not None:
            self._wake_scope.cancel()
        tasks, self._tasks, self._wake_scope = self._tasks, None, None
        try:
            if tasks is not None:
                await tasks.__aexit__(*exc_info)
        finally:
            await super().teardown(*exc_info)

    def is_worker_still_polling(self, query_interval_seconds: float) -> bool:
        """As BaseWorker's (a poll within 30 query intervals), from this worker's own polls."""
        return time.monotonic() - self._last_poll < 30 * query_interval_seconds

    async def get_and_submit_flow_runs(self) -> list[FlowRun]:
        """One poll (BaseWorker's poll loop and the event-driven wake-up call it): ask for at most
        as many scheduled runs as there are free slots, take them, start each on a thread.

        BaseWorker (Prefect 3.8.8) asks for every scheduled run of the pool on every poll and
        then takes as many as it can: under a burst of a hundred submissions each poll made the
        server serialize, and this worker parse, a hundred runs it could not take. Its submission
        also re-reads the deployment, templates a job configuration, labels the run, proposes
        `Submitting` and records an infrastructure pid for each run: ~0.3 s of API calls that buy
        nothing when the "infrastructure" is a thread of this process.
        """
        self._last_poll = time.monotonic()
        if self._draining or not self.is_setup or self._tasks is None or not self._knows_its_pool():
            return []  # as BaseWorker: no poll before the first sync with the server; none while draining
        return self.take(await self.scheduled_runs_for_free_slots())

    def _knows_its_pool(self) -> bool:
        try:
            self.work_pool  # noqa: B018  # known once the worker has synced with the server
        except RuntimeError:
            return False
        return True

    async def scheduled_runs_for_free_slots(self) -> list[WorkerFlowRunResponse]:
        """At most as many scheduled runs as this worker has free slots, and no query when it has
        none. The server's endpoint takes a `limit`; the client method does not expose it, so the
        request is made here."""
        free = int(self.limiter.available_tokens)
        if free < 1:
            return []
        body: dict[str, Any] = {"scheduled_before": (datetime.now(UTC) + self._lookahead).isoformat(), "limit": free}
        if self._queue_names:
            body["work_queue_names"] = self._queue_names
        try:
            response = await self.client.request(
                "POST", "/work_pools/{name}/get_scheduled_flow_runs", path_params={"name": self._pool_name}, json=body
            )
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:  # the pool is created on the next heartbeat, as BaseWorker has it
                return []
            raise
        return WorkerFlowRunResponse.model_validate_list(response.json())

    def take(self, scheduled: list[WorkerFlowRunResponse]) -> list[FlowRun]:
        """Hold a slot for each run while slots are free and start claiming it; the runs taken.

        A run whose slot is still held here is left out (the next poll takes it): it is being
        claimed already (two polls overlapped), or it was resumed moments after it suspended and
        is `Scheduled` again while the thread of its earlier attempt is still finishing (the
        engine reports the pause, flushes logs). The slot is held on behalf of the run id, and
        anyio refuses a second token for the same borrower with a RuntimeError: in the poll loop,
        that would end the loop and with it the worker.
        """
        if self._tasks is None:
            raise RuntimeError("the warm worker is not set up (use it as an async context manager)")
        if self._draining:  # a poll that was under way when the shutdown began: its runs stay Scheduled
            return []
        holding = set(self.limiter.statistics().borrowers)
        taken: list[FlowRun] = []
        for entry in scheduled:
            flow_run = entry.flow_run
            if flow_run.id in holding:
                continue
            try:
                self.limiter.acquire_on_behalf_of_nowait(flow_run.id)
            except anyio.WouldBlock:
                break
            self._in_flight[flow_run.id] = flow_run
            self._log_submission(flow_run)
            self._tasks.start_soon(self._claim_and_run, flow_run)
            taken.append(flow_run)
        return taken

    def _log_submission(self, flow_run: FlowRun) -> None:
        """The lines BaseWorker writes to a run it takes (the worker, and where its logs are)."""
        logger = self.get_flow_run_logger(flow_run)
        logger.info(f"Worker '{self.name}' submitting flow run '{flow_run.id}'")
        if self.backend_id:
            try:
                worker_url = url_for("worker", obj_id=self.backend_id, work_pool_name=self._pool_name)
                logger.info(f"Running on worker id: {self.backend_id}. See worker logs here: {worker_url}")
            except ValueError as exc:
                logger.warning(f"Failed to generate worker URL: {exc}")

    async def _claim_and_run(self, flow_run: FlowRun) -> None:
        """Claim the run (Scheduled → Pending) and run it on a thread; its slot is released after."""
        try:
            claimed = await self._propose(flow_run, Pending())
        except BaseException:
            self._release(flow_run.id)
            raise
        if claimed is None or not claimed.is_pending():
            self._release(flow_run.id)  # another worker took it, or it was cancelled meanwhile
            return
        if self._ledger is not None:
            self._ledger.take(flow_run.id)
        await self._run_and_release(flow_run)

    async def _run_and_release(self, flow_run: FlowRun) -> None:
        try:
            flow = await self._flow_of(flow_run)
            crashed = await anyio.to_thread.run_sync(_execute, flow, flow_run, limiter=self._threads)
        except Exception as exc:
            self.get_flow_run_logger(flow_run).exception("could not start flow run %s", flow_run.id)
            await self._propose(flow_run, Crashed(message=f"the warm worker could not run it: {exc}"))
        else:
            if crashed:
                await self._propose(flow_run, Crashed(message="the flow engine crashed (see the run's logs)"))
        finally:
            if self._ledger is not None:
                self._ledger.release(flow_run.id)
            self._release(flow_run.id)

    async def _propose(self, flow_run: FlowRun, state: State) -> State | None:
        """Propose a state through Prefect's orchestration (the public `propose_state`); None when
        it could not be set. Logged on the run as BaseWorker logs its claims and crash reports."""
        logger = self.get_flow_run_logger(flow_run)
        try:
            accepted = await propose_state(self.client, state, flow_run_id=flow_run.id)
        except Abort as exc:
            logger.info(f"Aborted {state.name} of flow run '{flow_run.id}'. Server sent an abort signal: {exc}")
            return None
        except ObjectNotFound:
            logger.debug(f"Flow run '{flow_run.id}' was deleted before its state could be updated")
            return None
        except Exception:
            logger.exception(f"Failed to update state of flow run '{flow_run.id}'")
            return None
        if state.is_pending() and not accepted.is_pending():
            logger.info(
                f"Aborted submission of flow run '{flow_run.id}': "
                f"Server returned a non-pending state {accepted.type.value!r}"
            )
        elif state.is_crashed() and accepted.is_crashed():
            logger.info(f"Reported flow run '{flow_run.id}' as crashed: {state.message}")
        return accepted

    def _release(self, flow_run_id: UUID) -> None:
        self._in_flight.pop(flow_run_id, None)
        with contextlib.suppress(RuntimeError):  # released already (an error path ran twice)
            self.limiter.release_on_behalf_of(flow_run_id)

    def stop_taking_runs(self) -> None:
        """The first step of a shutdown: no poll takes a run from now on, and the event-driven
        wake-up stops. Runs already taken go on."""
        self._draining = True
        if self._wake_scope is not None:
            self._wake_scope.cancel()

    async def drain(self, grace_seconds: float) -> list[FlowRun]:
        """Stop taking runs and wait up to `grace_seconds` for the runs in flight to end (finish,
        fail or suspend: each frees its slot); the runs still going when the time is up."""
        self.stop_taking_runs()
        with anyio.move_on_after(grace_seconds):
            while self.limiter.borrowed_tokens > 0:
                await anyio.sleep(0.1)
        return list(self._in_flight.values())

    async def hand_over(self, unfinished: list[FlowRun], grace_seconds: float) -> None:
        """Report runs this worker gives up on as `Crashed`: the reconcile deployment's trigger on
        `Crashed` compensates them now rather than after the heartbeat automation's silence. A run
        whose report fails stays in the ledger and is left to the heartbeat automation."""
        message = f"the worker stopped before the run ended (it drained for {grace_seconds:g} s)"
        for flow_run in unfinished:
            state = await self._propose(flow_run, Crashed(message=message))
            if state is not None and state.is_crashed() and self._ledger is not None:
                self._ledger.release(flow_run.id)

    async def run(
        self,
        flow_run: FlowRun,
        configuration: WarmJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> WarmWorkerResult:
        """BaseWorker's abstract entry point (BaseWorker's own submission path, e.g. its ad-hoc
        `submit`); this worker's polls start runs through `take` instead."""
        flow = await self._flow_of(flow_run)
        if task_status is not None:
            task_status.started(os.getpid())  # the run's "infrastructure" is this process
        crashed = await anyio.to_thread.run_sync(_execute, flow, flow_run, limiter=self._threads)
        return WarmWorkerResult(status_code=1 if crashed else 0, identifier=str(os.getpid()))

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

    async def _wake_on_scheduled_runs(self, scope: anyio.CancelScope) -> None:
        with scope:
            await wake_on_scheduled_runs(self)


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


async def wake_on_scheduled_runs(worker: WarmWorker) -> None:
    """Poll at once whenever a flow run becomes Scheduled (a submission, a resume, a retry).

    Started by the worker's own set-up (`wake_on_events=True`), so it runs exactly while the
    worker can take runs. Bursts coalesce: one poll picks up every run scheduled so far, so a
    poll already running when events arrive is followed by exactly one more.
    """
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

    scheduled = EventFilter(event=EventNameFilter(name=[SCHEDULED_EVENT]))
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


async def serve(pool: str, threads: int, ledger_path: Path | None = None, drain_seconds: float | None = None) -> None:
    """Run the worker until SIGTERM or SIGINT, then drain it (`run_until_stopped`)."""
    require_supported_prefect()
    share_prefect_client_ssl_contexts()
    preload_flows()
    freeze_startup_objects()
    logging.getLogger("prefect.task_runs").addFilter(_WithoutThreadTimeoutWarning())
    ledger = RunLedger(ledger_path) if ledger_path else None
    if ledger is not None:  # runs a predecessor held when it died: crashed now, not after the heartbeat timeout
        async with get_client() as client:
            await crash_orphans(client, ledger)
    worker = WarmWorker(
        work_pool_name=pool, threads=threads, ledger=ledger, wake_on_events=True, name=f"warm-{os.getpid()}"
    )
    grace = get_settings().worker.drain_seconds if drain_seconds is None else drain_seconds
    async with SharedSuspensionObserver() as suspensions:
        with suspensions.installed():
            await run_until_stopped(worker, grace)
    log.info("stopped: every run this worker held has ended")


async def run_until_stopped(worker: WarmWorker, grace_seconds: float) -> None:
    """Run the worker until SIGTERM/SIGINT (what Kubernetes and the stack runner send), then drain:
    take no new run and give the runs in flight `grace_seconds` to end. When they all ended, the
    worker's loops stop and its teardown runs. Runs still going are reported `Crashed` and the
    process exits at once: their threads cannot be interrupted, and waiting for them would only
    end in the kubelet's SIGKILL."""
    async with anyio.create_task_group() as group:

        async def work() -> None:
            await worker.start(printer=log.info)
            group.cancel_scope.cancel()  # the worker ended by itself: nothing to wait for

        group.start_soon(work)
        # Open until the process ends: a second signal while draining is received here and
        # ignored, instead of killing the process with the runs in it.
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.warning(  # the worker is leaving: seen at the default log level
                    "%s: taking no new runs; %d in flight get %g s to end",
                    signal.Signals(signum).name,
                    worker.limiter.borrowed_tokens,
                    grace_seconds,
                )
                break
            with anyio.CancelScope(shield=True):
                unfinished = await worker.drain(grace_seconds)
                if unfinished:
                    await worker.hand_over(unfinished, grace_seconds)
            if unfinished:
                log.warning("exiting with %d unfinished run(s), reported Crashed", len(unfinished))
                logging.shutdown()
                os._exit(0)
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
    parser.add_argument(
        "--drain-seconds",
        type=float,
        help="on SIGTERM, how long runs in flight may take to end (default: MARKETPLACE_WORKER__DRAIN_SECONDS)",
    )
    args = parser.parse_args()
    require_supported_prefect()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s - %(message)s")
    if args.create_pool:
        asyncio.run(create_pool(args.pool))
        return
    asyncio.run(serve(args.pool, args.threads, args.ledger, args.drain_seconds))


if __name__ == "__main__":
    main()
