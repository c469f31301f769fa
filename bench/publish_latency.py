"""Publish latency: submit-to-active and POST latency one at a time, then N at once (--bursts times).

    .venv/bin/python bench/publish_latency.py                 # own stack (Prefect on PostgreSQL), warm worker
    .venv/bin/python bench/publish_latency.py --worker process --concurrent 20
    .venv/bin/python bench/publish_latency.py --api-url http://127.0.0.1:8000   # against `make up`

The bursts run one after the other on the same stack, and the median of their p95s is the
figure to read: one burst's p95 moves by a few seconds with whatever else the shared machine
is doing. Prints the figures and appends them to bench/RESULTS.md. With its own stack it also scans every
part's log for `database is locked`, `too many clients`, tracebacks and ERROR lines. Every request
goes to loopback; the run is bounded by --timeout per publish.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import (
    PREFECT_REDIS,
    RESULTS,
    cpu_seconds,
    describe,
    machine_cpu_seconds,
    own_stack_or_running,
)
from tests.support import auth
from tests.support.provider import FakeProvider, good_spec

ERRORS: list[str] = []  # non-200 answers to the status polls (list.append is atomic)


@dataclass
class Sample:
    post_ms: float
    settle_s: float
    status: str
    started_s: float | None = None  # submit to the run's first transition (`validating`): waiting for a worker


def run_started(api: httpx.Client, service_id: str, submitted_at: datetime) -> float | None:
    """Seconds from submission to `validating` (the run's first task), from the service's history."""
    items = api.get(f"/api/v1/services/{service_id}/history").json().get("items", [])
    at = next((item["at"] for item in items if item.get("toStatus") == "validating"), None)
    return (datetime.fromisoformat(at) - submitted_at).total_seconds() if at else None


def publish_one(api: httpx.Client, provider_url: str, timeout: float, poll: float) -> Sample:
    """Submit one spec and wait for its end. Submit-to-active runs from just before the POST to the
    service's `publishedAt` (written by the activation, same clock): exact whatever the poll interval."""
    spec = good_spec(provider_url, name=f"bench-{uuid.uuid4().hex[:12]}")
    submitted_at = datetime.now(UTC)
    t0 = time.perf_counter()
    try:
        response = api.post("/api/v1/services", json=spec)
    except httpx.HTTPError as exc:  # an overloaded API is a result, not a crash of the benchmark
        ERRORS.append(f"POST {type(exc).__name__}")
        return Sample((time.perf_counter() - t0) * 1000, timeout, f"not submitted: {type(exc).__name__}")
    post_ms = (time.perf_counter() - t0) * 1000
    if response.status_code != 202:
        ERRORS.append(f"POST {response.status_code}: {response.text[:200]}")
        return Sample(post_ms, timeout, f"not submitted: HTTP {response.status_code}")
    service_id = response.json()["serviceId"]
    deadline = t0 + timeout
    body: dict[str, Any] = {"status": "submitted"}
    while time.perf_counter() < deadline:
        time.sleep(poll)
        try:
            read = api.get(f"/api/v1/services/{service_id}")
        except httpx.HTTPError as exc:
            ERRORS.append(f"GET {type(exc).__name__}")
            continue
        if read.status_code != 200:
            ERRORS.append(f"GET {read.status_code}: {read.text[:200]}")
            continue
        body = read.json()
        if body["status"] in ("active", "failed"):
            break
    settle_s = time.perf_counter() - t0
    if body["status"] == "active" and body.get("publishedAt"):
        settle_s = (datetime.fromisoformat(body["publishedAt"]) - submitted_at).total_seconds()
    return Sample(post_ms, settle_s, body["status"], run_started(api, service_id, submitted_at))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[index]


def run_round(api_url: str, provider_url: str, count: int, timeout: float) -> list[Sample]:
    # One at a time: poll every 20 ms; a burst: every 2 s per publish (50 polls/s for 100), so
    # the pollers do not compete for the cores with what they measure.
    poll = 0.02 if count == 1 else 2.0
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    with (
        httpx.Client(base_url=api_url, timeout=60, headers=auth.provider(), limits=limits) as api,
        ThreadPoolExecutor(max_workers=count) as pool,
    ):
        return list(pool.map(lambda _: publish_one(api, provider_url, timeout, poll), range(count)))


def summarize(label: str, samples: list[Sample]) -> str:
    settle = [s.settle_s for s in samples]
    post = [s.post_ms for s in samples]
    started = [s.started_s for s in samples if s.started_s is not None] or [float("nan")]
    active = sum(s.status == "active" for s in samples)
    return (
        f"| {label} | {len(samples)} | {active} | {statistics.median(settle):.2f} | {percentile(settle, 0.95):.2f} "
        f"| {statistics.median(post):.0f} | {percentile(post, 0.95):.0f} "
        f"| {statistics.median(started):.2f} | {percentile(started, 0.95):.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", help="use a running stack instead of starting one")
    parser.add_argument("--singles", type=int, default=20, help="publishes one at a time")
    parser.add_argument("--concurrent", type=int, default=100, help="publishes submitted at once")
    parser.add_argument("--bursts", type=int, default=3, help="bursts of --concurrent, one after the other (median)")
    parser.add_argument("--worker", choices=["warm", "process"], default="warm")
    parser.add_argument(
        "--prefect-redis",
        default=PREFECT_REDIS,
        help="own stack: Redis for Prefect's messaging ('none': in-memory)",
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds a publish may take")
    parser.add_argument("--workdir", help="own stack: keep its logs in this new directory")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = parser.parse_args()
    prefect_redis = None if args.prefect_redis == "none" else args.prefect_redis

    problems: list[str] = []
    stack = own_stack_or_running(
        args.api_url, args.workdir, "bench-publish-", worker=args.worker, prefect_redis=prefect_redis, problems=problems
    )
    with stack as (running, _), FakeProvider() as provider:
        api_url = args.api_url or running.config.api_url
        pids = {name: p.pid for name, p in running.processes} if running else {}
        run_round(api_url, provider.url, 1, args.timeout)  # warm-up: imports, first deployment lookup
        single = [s for _ in range(args.singles) for s in run_round(api_url, provider.url, 1, args.timeout)]
        bursts: list[tuple[list[Sample], dict[str, float], float, float]] = []
        for _ in range(args.bursts):  # the machine is shared and noisy: several bursts, their median
            time.sleep(5)  # let the server finish the earlier round's events first
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            machine_before, wall_before = machine_cpu_seconds(), time.monotonic()
            burst = run_round(api_url, provider.url, args.concurrent, args.timeout)
            cpu_burst = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
            machine, wall = machine_cpu_seconds() - machine_before, time.monotonic() - wall_before
            bursts.append((burst, cpu_burst, machine, wall))

    header = (
        "| round | publishes | active | submit-to-active p50 (s) | p95 (s) | POST p50 (ms) | POST p95 (ms) "
        "| submit-to-run-start p50 (s) | p95 (s) |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    rows = [summarize(f"1 at a time ({args.singles} runs)", single)]
    rows += [summarize(f"{args.concurrent} at once (burst {n})", b[0]) for n, b in enumerate(bursts, 1)]
    table = "\n".join([header, *rows])
    p95s = [percentile([s.settle_s for s in b[0]], 0.95) for b in bursts]
    table += f"\n\nSubmit-to-active p95 of the {len(bursts)} bursts: " + ", ".join(f"{p:.2f}" for p in p95s)
    table += f" s; median **{statistics.median(p95s):.2f} s**"
    for n, (_, cpu_burst, machine, wall) in enumerate(bursts, 1):
        if cpu_burst:
            parts = ", ".join(f"{name} {seconds:.1f}" for name, seconds in cpu_burst.items())
            table += f"\n\nCPU seconds during burst {n} (until its last publish settled): {parts}"
            table += f"; the whole machine {machine:.1f} in {wall:.1f} s ({machine / wall:.2f} cores busy on average)"
    if not args.api_url:
        kinds = "database is locked, too many clients, tracebacks, ERROR"
        table += f"\n\nProblem lines in the stack's logs ({kinds}): {len(problems)}"
    table += f"\n\nFailed requests (POST not accepted, status reads not answered 200) during the rounds: {len(ERRORS)}"
    print(table)
    for line in ERRORS[:5]:
        print("  ", line)
    for line in problems[:20]:
        print("  ", line[:200])
    if args.no_record:
        return
    command = shlex.join(["python", "bench/publish_latency.py", *sys.argv[1:]])
    setup = describe(args.worker, prefect_redis, "redis") if not args.api_url else "the running stack"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a") as out:
        out.write(f"\n## Publish latency — {when}\n\nCommand: `{command}` (2 cores, shared; {setup})\n\n{table}\n")


if __name__ == "__main__":
    main()
