"""Orchestration overhead: the publish tasks called directly in one process vs. through the platform.

    .venv/bin/python bench/orchestration_overhead.py [--runs 10] [--worker warm|process]

Starts the real stack (bench/stack.py: Prefect server on PostgreSQL with its messaging on Redis,
the warm worker, the API) and a local provider.
Alternating, one at a time:
- *direct*: a service stored through the repositories, then the publish flow's happy path
  executed by calling each task's function (`task.fn`) in this process: the same work, no
  Prefect, no API, no worker;
- *platform*: `POST /api/v1/services`, then polling until `active`.
Prints p50 wall time of both, their ratio, and the CPU seconds per publish of this process
(direct) and of each part of the stack (platform; read from /proc while only platform publishes
run, including Prefect's event processing after `active` until it is idle again).
Appends the table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import CACHE_REDIS, PREFECT_REDIS, RESULTS, bench_stack, cpu_seconds, describe  # noqa: E402
from storage.database import reset_engine, session_scope  # noqa: E402
from tests.support import auth  # noqa: E402
from tests.support.provider import FakeProvider, good_spec  # noqa: E402


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
    parser.add_argument(
        "--prefect-redis", default=PREFECT_REDIS, help="Redis for Prefect's messaging ('none': in-memory, one process)"
    )
    args = parser.parse_args()
    prefect_redis = None if args.prefect_redis == "none" else args.prefect_redis
    workdir = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    running_stack = bench_stack(workdir, worker=args.worker, prefect_redis=prefect_redis)
    with running_stack as (running, app_db), FakeProvider() as provider:
        os.environ["MARKETPLACE_DATABASE__URL"] = app_db
        os.environ["MARKETPLACE_ENDPOINT_TESTS__ALLOW_INSECURE_ENDPOINTS"] = "true"
        os.environ["MARKETPLACE_CACHE__REDIS_URL"] = CACHE_REDIS  # invalidates the API's cache, as the worker does
        reset_engine()
        pids = {name: proc.pid for name, proc in running.processes}
        event_processing = pids.get("prefect-services", pids["prefect-server"])
        with httpx.Client(base_url=running.config.api_url, timeout=60, headers=auth.provider()) as api:
            direct_publish(provider.url), platform_publish(api, provider.url)  # warm-up both paths
            wait_idle(event_processing)
            direct, direct_cpu, platform = [], [], []
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            for _ in range(args.runs):
                wall, cpu = direct_publish(provider.url)
                direct.append(wall)
                direct_cpu.append(cpu)
                platform.append(platform_publish(api, provider.url))
            wait_idle(event_processing)
            cpu_after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    per_publish = {name: (cpu_after[name] - cpu_before[name]) / args.runs for name in pids}
    parts = ", ".join(f"{name} {seconds:.3f}" for name, seconds in per_publish.items())
    d50, p50 = statistics.median(direct), statistics.median(platform)
    table = (
        "| path | publishes | p50 wall (s) | min (s) | max (s) | CPU s per publish |\n"
        "| --- | --- | --- | --- | --- | --- |\n"
        f"| direct: task functions in one process | {len(direct)} | {d50:.3f} | {min(direct):.3f} | "
        f"{max(direct):.3f} | {statistics.median(direct_cpu):.3f} (this process) |\n"
        f"| platform: API → Prefect → {args.worker} worker | {len(platform)} | {p50:.3f} | {min(platform):.3f} | "
        f"{max(platform):.3f} | {parts} |\n\n"
        f"Platform / direct (p50 wall): **{p50 / d50:.1f}x**; orchestration adds {p50 - d50:.2f} s per publish."
    )
    print(table)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a") as out:
        out.write(
            f"\n## Orchestration overhead — {when}\n\n"
            f"Command: `{shlex.join(['python', 'bench/orchestration_overhead.py', *sys.argv[1:]])}` "
            f"(2 cores shared; {describe(args.worker, prefect_redis, CACHE_REDIS)}; runs alternate direct/platform; "
            "CPU from /proc, Prefect's measured until its event backlog is processed)\n\n" + table + "\n"
        )


if __name__ == "__main__":
    main()
