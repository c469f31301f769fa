"""The stack as `make up` runs it (`python -m deployments.stack`: the embedded defaults, SQLite for the
marketplace and for Prefect, no Redis), on free ports: a part that dies is restarted, and a publication
whose worker was killed mid-run is crash-detected, reconciled and compensated."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import PROJECT_ROOT
from tests.e2e.conftest import eventually
from tests.support import auth
from tests.support.provider import FakeProvider, good_spec
from tests.support.registry import FakeRegistry
from tests.support.services import free_port

pytestmark = pytest.mark.e2e


@dataclass
class Runner:
    """The stack runner process and what it printed."""

    proc: subprocess.Popen[bytes]
    log: Path
    api_url: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def pids(self, part: str) -> list[int]:
        """Every pid the part was started with, in order (restarts included)."""
        return [int(pid) for pid in re.findall(rf"started {part} \(pid (\d+)\)", self.output())]


@pytest.fixture(scope="module")
def make_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runner, FakeRegistry]]:
    workdir = tmp_path_factory.mktemp("make-up")
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MARKETPLACE_", "PREFECT_"))}
    with FakeRegistry() as registry:
        env.update(
            {
                "MARKETPLACE_API__PORT": str(api_port),
                "MARKETPLACE_API__PUBLIC_URL": f"http://127.0.0.1:{api_port}",
                "MARKETPLACE_GATEWAY__PORT": str(free_port()),
                "MARKETPLACE_GATEWAY__JOURNAL_DIR": str(workdir / "gateway-journal"),
                "MARKETPLACE_STACK__PREFECT_PORT": str(free_port()),
                "MARKETPLACE_STACK__PREFECT_HOME": str(workdir / ".prefect"),
                "MARKETPLACE_DATABASE__URL": f"sqlite:///{workdir / 'marketplace.db'}",
                "MARKETPLACE_ENDPOINT_TESTS__ALLOW_INSECURE_ENDPOINTS": "true",  # as `make up` sets it
                "MARKETPLACE_ENDPOINT_TESTS__LATENCY_SAMPLES": "3",
                "MARKETPLACE_REGISTRY__URL": registry.url,
            }
        )
        log = workdir / "make-up.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "deployments.stack"],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        runner = Runner(proc, log, f"http://127.0.0.1:{api_port}")
        try:
            eventually(lambda: _ready(runner), 240, "make up to be ready")
            yield runner, registry
        finally:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _ready(runner: Runner) -> bool:
    assert runner.proc.poll() is None, f"the stack runner exited:\n{runner.output()[-3000:]}"
    if "Ctrl-C stops everything" not in runner.output():  # every part started, the supervisor watching
        return False
    try:
        return httpx.get(f"{runner.api_url}/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_killed_worker_is_restarted_and_its_run_reconciled(make_up: tuple[Runner, FakeRegistry]) -> None:
    runner, registry = make_up
    with (
        httpx.Client(base_url=runner.api_url, timeout=15, headers=auth.provider()) as api,
        FakeProvider("slow", delay_ms=4000) as provider,
    ):
        accepted = api.post("/api/v1/services", json=good_spec(provider.url, name="make-up-crash"))
        assert accepted.status_code == 202, accepted.text
        service_id = accepted.json()["serviceId"]
        eventually(lambda: _phase(api, service_id) == "endpoint_tests", 120, "the endpoint tests")
        assert service_id in _registered(registry)
        worker = runner.pids("worker")[-1]
        os.kill(worker, signal.SIGKILL)
        killed_at = time.monotonic()

        failed = eventually(lambda: _failed(api, service_id), 120, "the service to fail")
        detected_s = time.monotonic() - killed_at
        assert failed["flowRun"]["state"] == "CRASHED"
        assert failed["failure"]["phase"] == "endpoint_tests"
        assert failed["failure"]["reason"].startswith("publish run crashed")
        assert service_id not in _registered(registry), "compensated: the registry entry is gone"
        print(f"crash detected and reconciled {detected_s:.1f} s after the worker was killed")

        restarted = runner.pids("worker")
        assert len(restarted) == 2, "the worker came back"
        assert restarted[1] != worker
        assert f"worker (pid {worker}) exited with code -9" in runner.output()

        history = api.get(f"/api/v1/services/{service_id}/history").json()["items"]
        moves = [(h["toStatus"], h["actor"]) for h in history if h["toStatus"]]
        assert [m[0] for m in moves] == ["submitted", "validating", "testing", "failed"]
        assert moves[-1][1] == "reconciler"
        assert any(h["action"] == "rollback_completed" for h in history), history

    with FakeProvider() as provider, httpx.Client(base_url=runner.api_url, timeout=15, headers=auth.provider()) as api:
        accepted = api.post("/api/v1/services", json=good_spec(provider.url, name="make-up-after-crash"))
        service_id = accepted.json()["serviceId"]
        eventually(lambda: _status(api, service_id) == "active", 120, "a publication on the restarted worker")


def test_only_ctrl_c_stops_the_stack_and_the_api_is_restarted_too(make_up: tuple[Runner, FakeRegistry]) -> None:
    runner, _ = make_up
    api = runner.pids("api")[-1]
    os.kill(api, signal.SIGKILL)
    eventually(lambda: len(runner.pids("api")) >= 2, 30, "the API to be restarted")
    eventually(lambda: _ready(runner), 60, "the restarted API to be ready")
    assert runner.proc.poll() is None, "the stack runner keeps running"


def _phase(api: httpx.Client, service_id: str) -> str | None:
    report: dict[str, Any] = api.get(f"/api/v1/services/{service_id}/status").json()
    return report.get("currentPhase")


def _status(api: httpx.Client, service_id: str) -> str:
    return str(api.get(f"/api/v1/services/{service_id}").json()["status"])


def _failed(api: httpx.Client, service_id: str) -> dict[str, Any] | None:
    report: dict[str, Any] = api.get(f"/api/v1/services/{service_id}/status").json()
    crashed = (report.get("flowRun") or {}).get("state") == "CRASHED"
    return report if report["versionStatus"] == "failed" and crashed else None


def _registered(registry: FakeRegistry) -> set[str]:
    return {entry["metadata"]["marketplaceId"] for entry in registry.entries.values()}
