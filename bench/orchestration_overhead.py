"""Orchestration overhead: the publish tasks called directly in one process vs. through the platform.

    .venv/bin/python bench/orchestration_overhead.py [--runs 10] [--worker warm|process]

Starts the real stack (Prefect server on PostgreSQL, the worker, the API) and a local provider.
Alternating, one at a time:
- *direct*: a service stored through the repositories, then the publish flow's happy path
  executed by calling each task's function (`task.fn`) in this process: the same work, no
  Prefect, no API, no worker;
- *platform*: `POST /api/v1/services`, then polling until `active`.
Prints p50 wall time of both, their ratio, and the CPU seconds per publish of this process
(direct) and of the Prefect server, the worker and the API (platform; read from /proc while
only platform publishes run, including the server's work after `active` until it is idle again).
Appends the table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deployments.stack import Stack  # noqa: E402
from storage.database import reset_engine, session_scope  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from tests.support import auth  # noqa: E402
from tests.support.provider import FakeProvider, good_spec  # noqa: E402
from tests.support.services import temporary_database  # noqa: E402
from tests.support.stack import prefect_stack  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"


@contextmanager
def stack(worker: str) -> Iterator[tuple[Stack, str]]:
    with temporary_database(prefix="mkt_bench") as app_db, tempfile.TemporaryDirectory() as tmp:
        upgrade(app_db)
        env = {
            "MARKETPLACE_DATABASE__URL": app_db,
            "MARKETPLACE_ENDPOINT_TESTS__ALLOW_INSECURE_ENDPOINTS": "true",
            "MARKETPLACE_RATE_LIMIT__PUBLISH_LIMIT": "100000",
            "MARKETPLACE_WORKER__MODE": worker,
        }
        with prefect_stack(Path(tmp), with_worker=True, with_api=True, env=env) as running:
            yield running, app_db


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU of a process and its children still alive or reaped (utime+stime+cutime+cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def direct_publish(provider_url: str) -> tuple[float, float]:
    """The happy path of flows/publish.py with every task's function called directly."""
    from storage.models import new_id
    from storage.repositories import services
    from storage.repositories.services import Actor
    from tasks._common import PhaseInput, SpecInput
    from tasks.activation import activate_service
    from tasks.endpoint_tests import run_endpoint_tests
    from tasks.registry import registry_sync
    from tasks.submission import check_submission

    spec = good_spec(provider_url, name=f"direct-{uuid.uuid4().hex[:10]}")
    wall, cpu = time.perf_counter(), time.process_time()
    service_id, version_id = new_id(), new_id()
    with session_scope() as session:
        services.create_submitted(session, spec, Actor("acme", "provider"), service_id, version_id)
    base = PhaseInput(service_id=service_id, version_id=version_id, flow_run_id=None)
    checks = check_submission.fn(base)
    assert checks.failure is None, checks.failure
    inp = SpecInput(**base.model_dump(), spec=checks.spec)
    assert registry_sync.fn(inp).passed
    assert not run_endpoint_tests.fn(inp).failures
    activate_service.fn(base)
    with session_scope() as session:
        assert services.get(session, service_id).status == "active"
    return time.perf_counter() - wall, time.process_time() - cpu


def platform_publish(api: httpx.Client, provider_url: str) -> float:
    spec = good_spec(provider_url, name=f"platform-{uuid.uuid4().hex[:10]}")
    started = time.perf_counter()
    response = api.post("/api/v1/services", json=spec)
    response.raise_for_status()
    service_id = response.json()["serviceId"]
    while api.get(f"/api/v1/services/{service_id}").json()["status"] not in ("active", "failed"):
        time.sleep(0.02)
    return time.perf_counter() - started


def wait_idle(pid: int, quiet_seconds: float = 3.0, timeout: float = 120.0) -> None:
    """Until the process used under 5 % of a core over `quiet_seconds` (the server's event backlog)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(quiet_seconds)
        if cpu_seconds(pid) - before < 0.05 * quiet_seconds:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--worker", choices=["warm", "process"], default="warm")
    args = parser.parse_args()
    with stack(args.worker) as (running, app_db), FakeProvider() as provider:
        os.environ["MARKETPLACE_DATABASE__URL"] = app_db
        os.environ["MARKETPLACE_ENDPOINT_TESTS__ALLOW_INSECURE_ENDPOINTS"] = "true"
        reset_engine()
        pids = {name: running.pid_of(name) for name in ("prefect-server", "worker", "api")}
        with httpx.Client(base_url=running.config.api_url, timeout=60, headers=auth.provider()) as api:
            direct_publish(provider.url), platform_publish(api, provider.url)  # warm-up both paths
            wait_idle(pids["prefect-server"])
            direct, direct_cpu, platform = [], [], []
            cpu_before = {name: tree_cpu(pid) for name, pid in pids.items()}
            for _ in range(args.runs):
                wall, cpu = direct_publish(provider.url)
                direct.append(wall)
                direct_cpu.append(cpu)
                platform.append(platform_publish(api, provider.url))
            wait_idle(pids["prefect-server"])
            cpu_after = {name: tree_cpu(pid) for name, pid in pids.items()}
    per_publish = {name: (cpu_after[name] - cpu_before[name]) / args.runs for name in pids}
    d50, p50 = statistics.median(direct), statistics.median(platform)
    table = (
        "| path | publishes | p50 wall (s) | min (s) | max (s) | CPU s per publish |\n"
        "| --- | --- | --- | --- | --- | --- |\n"
        f"| direct: task functions in one process | {len(direct)} | {d50:.3f} | {min(direct):.3f} | "
        f"{max(direct):.3f} | {statistics.median(direct_cpu):.3f} (this process) |\n"
        f"| platform: API → Prefect → {args.worker} worker | {len(platform)} | {p50:.3f} | {min(platform):.3f} | "
        f"{max(platform):.3f} | server {per_publish['prefect-server']:.3f}, worker {per_publish['worker']:.3f}, "
        f"API {per_publish['api']:.3f} |\n\n"
        f"Platform / direct (p50 wall): **{p50 / d50:.1f}x**; orchestration adds {p50 - d50:.2f} s per publish."
    )
    print(table)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a") as out:
        out.write(
            f"\n## Orchestration overhead — {when}\n\n"
            f"Command: `python bench/orchestration_overhead.py --runs {args.runs} --worker {args.worker}` "
            "(2 cores shared; runs alternate direct/platform; CPU from /proc, the server's measured "
            "until its event backlog is processed)\n\n" + table + "\n"
        )


if __name__ == "__main__":
    main()
