"""One watch, for every flow run of a warm process, for suspensions requested from outside a run.

No public way: the flow engine starts its watch (`observe_flow_run_suspension`) for each run of a
deployment itself, and offers no setting or hook to share one. What this module uses is Prefect's
own machinery for it, the same the engine uses, shared instead of built per run:
- `prefect._internal.observers.FlowRunSuspendingObserver`: watches any number of runs, through
  the server's event stream (`prefect.flow-run.Suspended` events) with polling when the stream
  is lost, and reads each run's current state when its watch starts;
- `prefect._flow_run_suspension`: the request object the engine checks at each task boundary,
  and the registry of the requests of the runs in this process;
- the name `observe_flow_run_suspension` of `prefect.flow_engine`, which the engine calls for
  each run and which is replaced while the worker runs.
A rebuild on the public events client alone would have to re-create the observer's ordering of
the initial state read against the event stream, and its polling fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from uuid import UUID

import prefect.flow_engine as prefect_flow_engine
from prefect._flow_run_suspension import FlowRunSuspensionRequest, mark_flow_run_suspension_requested
from prefect._internal.observers import FlowRunSuspendingObserver
from prefect.client.schemas.objects import State

# What the engine calls for each run (imported into prefect.flow_engine by name, so replaced there).
ENGINE_OBSERVER = "observe_flow_run_suspension"
# The event the observer listens to (the server emits `prefect.flow-run.<state name>`).
SUSPENDED_EVENT = "prefect.flow-run.Suspended"


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
        original = getattr(prefect_flow_engine, ENGINE_OBSERVER)
        setattr(prefect_flow_engine, ENGINE_OBSERVER, self.observe)
        try:
            yield
        finally:
            setattr(prefect_flow_engine, ENGINE_OBSERVER, original)
