"""The process worker (MARKETPLACE_WORKER__MODE=process, this directory's stack): a publish run
whose own process is killed mid-pipeline is found and compensated, and the worker lives on."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx

from deployments.stack import Stack
from tests.faults.conftest import as_provider
from tests.faults.helpers import eventually
from tests.support.provider import FakeProvider, good_spec
from tests.support.registry import FakeRegistry
from tests.support.runs import started_run_id


def children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def run_processes(worker: int, flow_run_id: str) -> list[int]:
    """The worker's child processes executing `flow_run_id` (the worker passes it in the environment)."""
    marker = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    found = []
    for pid in children(worker):
        try:
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(pid)
        except OSError:
            continue
    return found


def test_killed_flow_process_ends_failed_with_nothing_in_the_registry(
    api: httpx.Client, faults_stack: Stack, registry: FakeRegistry
) -> None:
    worker = faults_stack.pid_of("worker")
    with FakeProvider("slow", delay_ms=4000) as provider:
        spec = good_spec(provider.url, name="faults-crash")
        headers = as_provider(spec)
        response = api.post("/api/v1/services", json=spec, headers=headers)
        service_id = response.json()["serviceId"]
        flow_run_id = started_run_id(api, service_id, headers)

        def status() -> dict[str, Any]:
            report: dict[str, Any] = api.get(f"/api/v1/services/{service_id}/status", headers=headers).json()
            return report

        eventually(lambda: status()["currentPhase"] == "endpoint_tests", 90, "the endpoint-test phase")
        assert any(v["metadata"]["marketplaceId"] == service_id for v in registry.entries.values())
        for pid in eventually(lambda: run_processes(worker, flow_run_id), 10, "the run's process"):
            os.kill(pid, signal.SIGKILL)  # only the process running this publication

        def failed_and_state_known() -> dict[str, Any] | None:
            report = status()  # the run's state is unknown (null) until read after the failure was recorded
            return report if report["status"] == "failed" and report["flowRun"]["state"] is not None else None

        failed = eventually(failed_and_state_known, 90, "failed")
    assert failed["flowRun"]["state"] == "CRASHED"
    assert failed["failure"]["phase"] == "endpoint_tests"
    assert failed["failure"]["reason"].startswith("publish run crashed")
    assert not any(v["metadata"]["marketplaceId"] == service_id for v in registry.entries.values())
    history = api.get(f"/api/v1/services/{service_id}/history", params={"limit": 100}, headers=headers).json()["items"]
    assert [h["actor"] for h in history if h["toStatus"] == "failed"] == ["reconciler"]
