"""What the project assumes of Prefect, pinned: a Prefect upgrade fails here, in one place.

Each test names one assumption of deployments/prefect_compat (the private names it uses) or of the
warm worker (the public BaseWorker hooks it overrides, the events it listens to). When one fails
after an upgrade, docs/prefect-upgrade.md says what to do. The private names are used here on
purpose: this file is the one place, besides the seam, allowed to name them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import anyio
import prefect
import prefect.client.orchestration as prefect_client_module
import prefect.flow_engine as prefect_flow_engine
import pytest
from prefect._flow_run_suspension import (
    FlowRunSuspensionRequest,
    mark_flow_run_suspension_requested,
    observe_flow_run_suspension,
    register_flow_run_suspension_request,
)
from prefect._internal.observers import FlowRunSuspendingObserver
from prefect.client.orchestration import PrefectClient, SyncPrefectClient, get_client
from prefect.client.schemas.responses import WorkerFlowRunResponse
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.flow_engine import BaseFlowRunEngine
from prefect.server.api import workers as server_workers
from prefect.server.database.configurations import AioSqliteConfiguration
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Completed, Pending, Suspended
from prefect.utilities.engine import propose_state
from prefect.utilities.urls import url_for
from prefect.workers.base import BaseWorker

import deployments.prefect_cli
import deployments.warm_worker
from deployments.prefect_compat import (
    SUPPORTED_PREFECT,
    UnsupportedPrefectVersion,
    client_tls,
    require_supported_prefect,
    suspension,
)
from deployments.prefect_compat.sqlite import serialize_sqlite_writes
from deployments.stack import Stack
from deployments.warm_worker import SCHEDULED_EVENT, WarmWorker

ROOT = Path(__file__).resolve().parents[2]


def parameters(function: Callable[..., Any]) -> list[tuple[str, Any]]:
    """Names and defaults of a callable's parameters (annotations left out: they are strings)."""
    return [(p.name, p.default) for p in inspect.signature(function).parameters.values()]


# ------------------------------------------------------------------------- the version check


def test_the_installed_prefect_is_the_pinned_one_and_supported() -> None:
    pinned = re.search(r"^prefect==(\S+)$", (ROOT / "requirements.lock").read_text(), re.MULTILINE)
    assert pinned is not None
    assert prefect.__version__ == pinned.group(1)
    assert prefect.__version__ in SUPPORTED_PREFECT
    require_supported_prefect()  # no error


@pytest.mark.parametrize("version", ["3.9.0", "3.8.9", "3.8.7", "4.0.0", "3.8.8rc1"])
def test_an_unsupported_prefect_is_refused_with_what_to_do(version: str) -> None:
    with pytest.raises(UnsupportedPrefectVersion) as refused:
        require_supported_prefect(version)
    message = str(refused.value)
    assert f"Prefect {version} is installed" in message
    assert all(supported in message for supported in SUPPORTED_PREFECT)
    assert f"pip install prefect=={SUPPORTED_PREFECT[-1]}" in message
    assert "docs/prefect-upgrade.md" in message
    assert (ROOT / "docs" / "prefect-upgrade.md").is_file()


def test_every_entry_point_that_uses_the_seam_checks_the_version_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """The warm worker (serve, and its command line) and the stack's Prefect processes refuse an
    unsupported Prefect before anything of the seam is applied."""
    monkeypatch.setattr(prefect, "__version__", "9.9.9")
    applied: list[str] = []
    monkeypatch.setattr(deployments.prefect_cli, "serialize_sqlite_writes", lambda: applied.append("sqlite"))
    monkeypatch.setattr(deployments.prefect_cli, "app", lambda: applied.append("cli"))
    monkeypatch.setattr(deployments.warm_worker, "share_prefect_client_ssl_contexts", lambda: applied.append("tls"))
    monkeypatch.setattr(deployments.warm_worker, "create_pool", lambda pool: applied.append("pool"))
    monkeypatch.setattr(sys, "argv", ["warm_worker", "--pool", "p", "--create-pool"])

    with pytest.raises(UnsupportedPrefectVersion, match=r"Prefect 9\.9\.9 is installed"):
        deployments.prefect_cli.main()
    with pytest.raises(UnsupportedPrefectVersion, match=r"Prefect 9\.9\.9 is installed"):
        deployments.warm_worker.main()
    with pytest.raises(UnsupportedPrefectVersion, match=r"Prefect 9\.9\.9 is installed"):
        asyncio.run(deployments.warm_worker.serve("p", 1))
    assert applied == []


# ------------------------------------------------------- suspension: prefect._flow_run_suspension


def test_the_engine_calls_observe_flow_run_suspension_by_its_name_in_prefect_flow_engine() -> None:
    """Replacing `prefect.flow_engine.observe_flow_run_suspension` reaches every run only if the
    engine looks the name up in that module's globals when a run starts."""
    assert prefect_flow_engine.observe_flow_run_suspension is observe_flow_run_suspension
    setup = BaseFlowRunEngine.setup_flow_run_suspension_request
    function = inspect.unwrap(setup)
    assert function.__globals__ is vars(prefect_flow_engine)
    assert "observe_flow_run_suspension(" in inspect.getsource(function)
    assert suspension.ENGINE_OBSERVER == "observe_flow_run_suspension"


def test_the_shared_observer_takes_the_engines_observer_arguments() -> None:
    ours = parameters(suspension.SharedSuspensionObserver.observe)
    assert ours[0][0] == "self"
    assert ours[1:] == parameters(observe_flow_run_suspension)
    assert parameters(observe_flow_run_suspension) == [
        ("flow_run_id", inspect.Parameter.empty),
        ("suspension_request", inspect.Parameter.empty),
        ("polling_interval", 10),
    ]


def test_installing_the_shared_observer_replaces_the_engines_and_restores_it() -> None:
    observer = suspension.SharedSuspensionObserver()
    with observer.installed():
        assert prefect_flow_engine.observe_flow_run_suspension == observer.observe
    assert prefect_flow_engine.observe_flow_run_suspension is observe_flow_run_suspension


def test_a_suspension_request_is_marked_through_the_registry_of_the_runs_of_this_process() -> None:
    assert parameters(mark_flow_run_suspension_requested) == [
        ("flow_run_id", inspect.Parameter.empty),
        ("state", inspect.Parameter.empty),
    ]
    assert parameters(FlowRunSuspensionRequest.mark_requested) == [
        ("self", inspect.Parameter.empty),
        ("state", inspect.Parameter.empty),
    ]
    request, run_id, state = FlowRunSuspensionRequest(), uuid4(), Suspended(timeout_seconds=60)
    assert mark_flow_run_suspension_requested(run_id, state) is False  # not registered: not marked
    with register_flow_run_suspension_request(run_id, request):
        assert mark_flow_run_suspension_requested(run_id, state) is True
    assert request.is_requested() and request.get_state() is state
    with pytest.raises(prefect.exceptions.Pause):
        request.raise_if_requested()


def test_the_suspending_observer_watches_runs_and_calls_back_with_run_id_and_state() -> None:
    init = dict(parameters(FlowRunSuspendingObserver.__init__))
    assert "on_suspended" in init and init["polling_interval"] == 10
    assert inspect.iscoroutinefunction(FlowRunSuspendingObserver.watch_flow_run_id)
    assert parameters(FlowRunSuspendingObserver.watch_flow_run_id) == [
        ("self", inspect.Parameter.empty),
        ("flow_run_id", inspect.Parameter.empty),
    ]
    assert parameters(FlowRunSuspendingObserver.remove_in_flight_flow_run_id) == [
        ("self", inspect.Parameter.empty),
        ("flow_run_id", inspect.Parameter.empty),
    ]
    assert inspect.iscoroutinefunction(FlowRunSuspendingObserver.__aenter__)
    assert inspect.iscoroutinefunction(FlowRunSuspendingObserver.__aexit__)
    callback = inspect.signature(prefect._internal.observers.OnSuspendedCallback.__call__)
    assert list(callback.parameters) == ["self", "flow_run_id", "state"]


def test_the_suspending_observer_listens_to_the_suspended_event() -> None:
    observer = FlowRunSuspendingObserver(on_suspended=lambda flow_run_id, state: None)
    event_filter = observer._event_filter
    assert event_filter.event is not None
    assert event_filter.event.name == [suspension.SUSPENDED_EVENT]


# ------------------------------------------------- client TLS: prefect.client.orchestration.ssl


@pytest.mark.parametrize("client_class", [PrefectClient, SyncPrefectClient])
def test_clients_build_their_verifying_context_through_the_client_modules_ssl(client_class: type) -> None:
    init = client_class.__init__
    assert init.__globals__ is vars(prefect_client_module)
    assert "ssl.create_default_context(cafile=cert_file)" in inspect.getsource(init)
    assert client_tls.CLIENT_SSL_ATTRIBUTE in vars(prefect_client_module)


def test_shared_contexts_are_used_by_every_client_built_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefect_client_module, client_tls.CLIENT_SSL_ATTRIBUTE, ssl)  # restored after
    client_tls.share_prefect_client_ssl_contexts()
    before = client_tls._verified_context.cache_info()
    PrefectClient("http://127.0.0.1:9/api")
    SyncPrefectClient("http://127.0.0.1:9/api")
    after = client_tls._verified_context.cache_info()
    assert after.hits + after.misses - before.hits - before.misses == 2
    assert after.currsize >= 1


# ---------------------------------------------------------- the Prefect server on SQLite


def test_sqlite_transactions_take_the_write_lock_when_asked_for_a_row_lock() -> None:
    begin = AioSqliteConfiguration.begin_transaction
    assert not getattr(begin, "_marketplace_immediate", False), "check Prefect's own method, not ours"
    assert parameters(begin) == [
        ("self", inspect.Parameter.empty),
        ("session", inspect.Parameter.empty),
        ("with_for_update", False),
    ]
    source = inspect.getsource(begin)
    assert '"IMMEDIATE" if with_for_update else "DEFERRED"' in source


def test_serialize_sqlite_writes_asks_every_transaction_for_the_write_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[bool] = []

    @contextlib.asynccontextmanager
    async def original(self: object, session: object, with_for_update: bool = False) -> AsyncIterator[None]:
        asked.append(with_for_update)
        yield

    monkeypatch.setattr(AioSqliteConfiguration, "begin_transaction", original)  # Prefect's is restored after
    serialize_sqlite_writes()
    serialize_sqlite_writes()  # a second time changes nothing

    async def begin() -> None:
        async with AioSqliteConfiguration.begin_transaction(AioSqliteConfiguration("sqlite+aiosqlite://"), None):
            pass

    asyncio.run(begin())
    assert asked == [True]


# ------------------------------------------------------- the warm worker's public BaseWorker hooks


def test_the_poll_loop_and_the_worker_context_call_the_public_hooks_the_warm_worker_overrides() -> None:
    start = inspect.getsource(BaseWorker.start)
    assert "async with self as worker" in start
    assert "workload=self.get_and_submit_flow_runs" in start
    assert "await self.setup()" in inspect.getsource(BaseWorker.__aenter__)
    assert "await self.teardown(*exc_info)" in inspect.getsource(BaseWorker.__aexit__)


def test_the_worker_loop_leaves_sigterm_to_the_warm_worker() -> None:
    """The warm worker drains on SIGTERM/SIGINT by cancelling `start` (deployments/warm_worker.py,
    `run_until_stopped`): BaseWorker must install no handler of its own that would take the signal."""
    for method in (BaseWorker.start, BaseWorker.__aenter__, BaseWorker.__aexit__, BaseWorker.setup):
        assert "signal" not in inspect.getsource(method), method.__qualname__


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "__init__",
            [
                ("self", inspect.Parameter.empty),
                ("work_pool_name", inspect.Parameter.empty),
                ("work_queues", None),
                ("name", None),
                ("prefetch_seconds", None),
                ("create_pool_if_not_found", True),
                ("limit", None),
                ("heartbeat_interval_seconds", None),
                ("base_job_template", None),
            ],
        ),
        ("get_and_submit_flow_runs", [("self", inspect.Parameter.empty)]),
        ("setup", [("self", inspect.Parameter.empty)]),
        ("teardown", [("self", inspect.Parameter.empty), ("exc_info", inspect.Parameter.empty)]),
        (
            "run",
            [
                ("self", inspect.Parameter.empty),
                ("flow_run", inspect.Parameter.empty),
                ("configuration", inspect.Parameter.empty),
                ("task_status", None),
            ],
        ),
        (
            "kill_infrastructure",
            [
                ("self", inspect.Parameter.empty),
                ("infrastructure_pid", inspect.Parameter.empty),
                ("configuration", inspect.Parameter.empty),
                ("grace_seconds", 30),
            ],
        ),
        (
            "is_worker_still_polling",
            [("self", inspect.Parameter.empty), ("query_interval_seconds", inspect.Parameter.empty)],
        ),
        ("get_flow_run_logger", [("self", inspect.Parameter.empty), ("flow_run", inspect.Parameter.empty)]),
    ],
)
def test_base_worker_method_signatures(name: str, expected: list[tuple[str, Any]]) -> None:
    assert not name.startswith("_") or name == "__init__"
    assert parameters(getattr(BaseWorker, name)) == expected


def test_base_worker_get_description_is_the_classmethod_the_warm_worker_overrides() -> None:
    assert isinstance(inspect.getattr_static(BaseWorker, "get_description"), classmethod)
    assert WarmWorker.get_description().startswith("Runs flow runs in threads")


def test_before_set_up_the_worker_reports_no_client_limiter_or_pool_and_is_not_set_up() -> None:
    """The warm worker polls only once `is_setup` and its pool is known (`work_pool` raises
    RuntimeError until the first sync with the server)."""

    async def before_set_up() -> None:
        worker = WarmWorker(work_pool_name="contract-pool", threads=1)
        assert worker.is_setup is False
        for name in ("client", "limiter", "work_pool"):
            with pytest.raises(RuntimeError, match="not been correctly initialized"):
                getattr(worker, name)
        assert await worker.get_and_submit_flow_runs() == []

    asyncio.run(before_set_up())


def test_the_public_helpers_the_warm_worker_calls() -> None:
    assert parameters(propose_state) == [
        ("client", inspect.Parameter.empty),
        ("state", inspect.Parameter.empty),
        ("flow_run_id", inspect.Parameter.empty),
        ("force", False),
    ]
    request = dict(parameters(PrefectClient.request))
    assert "path_params" in request
    assert callable(WorkerFlowRunResponse.model_validate_list)
    assert "obj_id" in inspect.signature(url_for).parameters  # the worker's link in a run's log
    assert "limit" in inspect.signature(server_workers.get_scheduled_flow_runs).parameters

    async def one_slot_per_run() -> None:  # a run's slot is held on behalf of its id, once
        limiter = anyio.CapacityLimiter(1)
        limiter.acquire_on_behalf_of_nowait("run")
        assert limiter.statistics().borrowers == ("run",)
        with pytest.raises(RuntimeError, match="already holding"):
            limiter.acquire_on_behalf_of_nowait("run")

    asyncio.run(one_slot_per_run())


# ------------------------------------------------------------------------------- the events


def test_the_server_emits_the_events_the_worker_and_the_observer_listen_to(prefect_server: Stack) -> None:
    """A flow run entering Scheduled wakes the warm worker's poll; one entering Suspended is what
    the suspension observer waits for. Both are events `prefect.flow-run.<state name>`."""
    names = [SCHEDULED_EVENT, suspension.SUSPENDED_EVENT]
    assert names == ["prefect.flow-run.Scheduled", "prefect.flow-run.Suspended"]

    async def observe() -> dict[str, set[UUID]]:
        seen: dict[str, set[UUID]] = {name: set() for name in names}
        subscribed = get_events_subscriber(filter=EventFilter(event=EventNameFilter(name=names)))
        async with subscribed as subscriber, get_client() as client:
            deployment = await client.read_deployment_by_name("publish-service/publish-service")
            run = await client.create_flow_run_from_deployment(
                deployment.id, parameters={"service_id": "contract", "version_id": "v"}
            )
            await client.set_flow_run_state(run.id, Pending(), force=True)
            await client.set_flow_run_state(run.id, Suspended(timeout_seconds=600), force=True)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not all(run.id in ids for ids in seen.values()):
                with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                    event = await subscriber.__anext__()
                    if event.resource.id == f"prefect.flow-run.{run.id}":
                        seen[event.event].add(run.id)
            await client.set_flow_run_state(run.id, Completed(), force=True)
            return seen

    with temporary_settings({PREFECT_API_URL: prefect_server.config.prefect_api_url}):
        seen = asyncio.run(observe())
    assert all(len(ids) == 1 for ids in seen.values()), seen
