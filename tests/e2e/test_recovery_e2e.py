"""The warm worker (the default) dying mid-publish: its runs are found and compensated.

The runs of a warm worker live in its process, so losing the process loses all of them and no
worker is left to report it. Runs send heartbeats; the platform's automation marks a run whose
heartbeats stop `Crashed` (deployments/automations.py), and the reconcile deployment's trigger
compensates it: registry entry removed, service failed. The worker comes back (here: restarted
by the test, in production by its supervisor) and takes new runs. A run claimed by a worker that
was lost before the run sent its first heartbeat is found the same way.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient

from deployments.stack import Stack
from tests.e2e.conftest import CLAIMED_NEVER_STARTED, CRASH_AFTER, HEARTBEAT, eventually
from tests.support.provider import FakeProvider, good_spec
from tests.support.registry import FakeRegistry

pytestmark = pytest.mark.e2e


def test_a_lost_warm_worker_leaves_failed_services_and_nothing_in_the_registry(
    api: httpx.Client, e2e_stack: Stack, registry: FakeRegistry, wait_until_settled: Callable[..., dict[str, Any]]
) -> None:
    with FakeProvider("slow", delay_ms=4000) as provider:
        ids = [
            api.post("/api/v1/services", json=good_spec(provider.url, name=f"e2e-lost-{n}")).json()["serviceId"]
            for n in range(2)
        ]

        def testing(service_id: str) -> bool:
            return bool(api.get(f"/api/v1/services/{service_id}/status").json()["currentPhase"] == "endpoint_tests")

        for service_id in ids:
            eventually(functools.partial(testing, service_id), 90, "the endpoint-test phase")
        registered = {v["metadata"]["marketplaceId"] for v in registry.entries.values()}
        assert set(ids) <= registered
        os.kill(e2e_stack.pid_of("worker"), signal.SIGKILL)  # every run it held dies with it
        e2e_stack.start_worker()

        for service_id in ids:
            failed = wait_until_settled(service_id, timeout=HEARTBEAT + CRASH_AFTER + 60, status="failed")
            assert failed["flowRun"]["state"] == "CRASHED"
            assert failed["failure"]["phase"] == "endpoint_tests"
            assert failed["failure"]["reason"].startswith("publish run crashed")
            history = api.get(f"/api/v1/services/{service_id}/history", params={"limit": 100}).json()["items"]
            assert [h["actor"] for h in history if h["toStatus"] == "failed"] == ["reconciler"]
        registered = {v["metadata"]["marketplaceId"] for v in registry.entries.values()}
        assert not set(ids) & registered

        # the run claimed by a worker lost before starting it (left Pending when the stack started)
        (claimed,) = CLAIMED_NEVER_STARTED

        def claimed_crashed() -> str | None:  # at once in the whole suite: the window passed long ago
            with SyncPrefectClient(e2e_stack.config.prefect_api_url) as prefect:
                state = prefect.read_flow_run(claimed).state
            return state.message if state is not None and state.type.value == "CRASHED" else None

        message = eventually(claimed_crashed, CRASH_AFTER + 60, "the claimed, never started run to be Crashed")
        assert message.startswith("no sign of life")

    with FakeProvider() as provider:  # the restarted worker takes new runs
        service_id = api.post("/api/v1/services", json=good_spec(provider.url, name="e2e-after-loss")).json()[
            "serviceId"
        ]
        assert wait_until_settled(service_id)["status"] == "active"
