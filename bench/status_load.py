"""Status-read latency under load: GET /services/{id}/status at a fixed rate, idle and during 20 publishes.

    .venv/bin/python bench/status_load.py                 # starts its own stack (Prefect on PostgreSQL), Redis cache
    .venv/bin/python bench/status_load.py --cache local   # the in-process cache (no Redis), as `make up` runs
    .venv/bin/python bench/status_load.py --api-url http://127.0.0.1:8000   # against `make up`

The load generator is a separate process with its own event loop (bench/loadgen.py: bare asyncio
streams over a pool of keep-alive connections; httpx cost the client a millisecond of CPU a
request). It is open-loop: sends are scheduled on a timer at `--rate` per second and never wait
for earlier answers, and each latency is measured from the moment the request was *due*, so a
stalled server shows up in the figures instead of slowing the generator down (closed-loop
generators hide exactly that). It stops by itself after `--duration` seconds
(at most rate x duration requests) and every request has a timeout.

Two rounds in one run, side by side:

1. idle: the status of `--publishes` services that finished publishing; nothing else runs;
2. during publishes: `--publishes` new publications submitted at once, and the status of those
   services read while their pipelines run.

Prints a markdown table and appends it to bench/RESULTS.md. Every request goes to loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shlex
import statistics
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import loadgen  # noqa: E402
from bench.stack import (  # noqa: E402
    CACHE_REDIS,
    PREFECT_REDIS,
    RESULTS,
    api_on_its_own_cpu,
    describe,
    own_stack_or_running,
)
from tests.support import auth  # noqa: E402
from tests.support.provider import FakeProvider, good_spec  # noqa: E402

IN_PIPELINE = {"submitted", "validating", "testing"}
SETTLED = {"active", "failed", "pending_approval"}
GENERATOR_NICE = -10
MAX_IN_FLIGHT = 128  # connections of the load generator; a server this far behind gets errors, not a queue


# ---------------------------------------------------------------- the load generator (its own process)


@dataclass
class Load:
    """What one round of the load generator saw."""

    label: str
    scheduled: int
    latencies_ms: list[float] = field(default_factory=list)  # successful requests, from the time each was due
    errors: Counter[str] = field(default_factory=Counter)
    in_pipeline: int = 0  # answers that showed the publication still in the pipeline
    send_seconds: float = 0.0  # from the first due time to the last actual send
    lag_ms: float = 0.0  # the generator's worst delay behind its own schedule
    pipeline_until_s: float = 0.0  # when (into the round) an answer last showed a publication in the pipeline


async def _drive(
    api_url: str, headers: dict[str, str], ids: list[str], rate: float, duration: float, label: str
) -> Load:
    """Send on schedule whatever the answers do (bench/loadgen.py); a send due while all connections are busy fails."""
    requests = [loadgen.build_get(api_url, f"/api/v1/services/{i}/status", headers) for i in ids]
    started = time.perf_counter()
    load = Load(label=label, scheduled=int(rate * duration))

    def on_answer(answer: loadgen.Answer) -> None:
        if json.loads(answer.body).get("versionStatus") in IN_PIPELINE:
            load.in_pipeline += 1
            load.pipeline_until_s = max(load.pipeline_until_s, time.perf_counter() - started)

    result = await loadgen.drive(api_url, requests, rate, duration, connections=MAX_IN_FLIGHT, on_answer=on_answer)
    load.latencies_ms, load.errors = result.latencies_ms, result.errors
    load.send_seconds, load.lag_ms = result.send_seconds, result.lag_ms
    return load


def _generator_main(
    api_url: str, headers: dict[str, str], ids: list[str], rate: float, duration: float, label: str
) -> Load:
    # The clients of a real API are on other machines: here they share its cores, so the generator
    # runs ahead of everything on the machine when it may (as root), and its own lag is reported.
    # In a session of its own: Linux schedules sessions as groups (autogroup), nice ranks within one.
    with contextlib.suppress(OSError):
        os.setsid()
        os.setpriority(os.PRIO_PROCESS, 0, GENERATOR_NICE)
        Path("/proc/self/autogroup").write_text(str(GENERATOR_NICE))
    return asyncio.run(_drive(api_url, headers, ids, rate, duration, label))


def run_load(api_url: str, ids: list[str], rate: float, duration: float, label: str) -> Load:
    """One round from a fresh process (spawned: its own interpreter and event loop, no inherited threads)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_generator_main, (api_url, auth.provider(), ids, rate, duration, label))


# ---------------------------------------------------------------- publishing


def submit(api: httpx.Client, provider_url: str) -> str | None:
    """One publication; None when the API did not accept it (recorded, not fatal: an overloaded API is a result)."""
    spec = good_spec(provider_url, name=f"bench-status-{uuid.uuid4().hex[:12]}")
    try:
        response = api.post("/api/v1/services", json=spec)
    except httpx.HTTPError:
        return None
    if response.status_code != 202:
        return None
    service_id: str = response.json()["serviceId"]
    return service_id


def submit_many(api_url: str, provider_url: str, count: int) -> list[str]:
    """Submit `count` publications at once; the ids of those accepted."""
    with (
        httpx.Client(base_url=api_url, timeout=60, headers=auth.provider()) as api,
        ThreadPoolExecutor(max_workers=count) as pool,
    ):
        return [i for i in pool.map(lambda _: submit(api, provider_url), range(count)) if i is not None]


def wait_responsive(api_url: str, timeout: float = 300) -> None:
    """Until the API answers /health within 100 ms again (an overloaded one works off its backlog first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{api_url}/health", timeout=30).status_code == 200 and time.perf_counter() - t0 < 0.1:
                return
        time.sleep(1)


def settled(api_url: str, ids: list[str]) -> list[str]:
    """The services whose publication has ended (active, failed, waiting for approval)."""
    done = []
    with httpx.Client(base_url=api_url, timeout=60, headers=auth.provider()) as api:
        for service_id in ids:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                if api.get(f"/api/v1/services/{service_id}/status").json()["versionStatus"] in SETTLED:
                    done.append(service_id)
    return done


def wait_settled(api_url: str, ids: list[str], timeout: float) -> float:
    """Seconds until every publication ended (bounded by `timeout`)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout and len(settled(api_url, ids)) < len(ids):
        time.sleep(1)
    return time.monotonic() - t0


# ---------------------------------------------------------------- reporting


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[index]


def row(load: Load, duration: float) -> str:
    lat = load.latencies_ms
    errors = sum(load.errors.values())
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(load.errors.items())) or "—"
    cells = [
        load.label,
        str(load.scheduled),
        f"{load.scheduled / max(load.send_seconds, duration):.1f}",
        str(len(lat)),
        f"{errors} ({kinds})",
        f"{statistics.median(lat) if lat else float('nan'):.1f}",
        f"{percentile(lat, 0.95):.1f}",
        f"{percentile(lat, 0.99):.1f}",
        f"{max(lat) if lat else float('nan'):.1f}",
        f"{load.lag_ms:.1f}",
        str(load.in_pipeline),
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| round | requests | achieved rate (/s) | ok | errors | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) "
    "| generator lag max (ms) | answers in pipeline |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


# ---------------------------------------------------------------- the stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", help="use a running stack instead of starting one")
    parser.add_argument("--cache", choices=["redis", "local"], default="redis", help="own stack: the API's read cache")
    parser.add_argument("--worker-mode", choices=["warm", "process"], default="warm", help="own stack: the worker")
    parser.add_argument(
        "--prefect-redis", default=PREFECT_REDIS, help="own stack: Redis for Prefect's messaging ('none': in-memory)"
    )
    parser.add_argument(
        "--api-placement",
        choices=["shared", "own-cpu", "realtime"],
        default="shared",
        help="own stack: the API shares the cores with everything (default), has a CPU of its own (pinned; the "
        "rest on the other CPU), or runs at real-time priority on shared cores (the opt-in)",
    )
    parser.add_argument("--publishes", type=int, default=20)
    parser.add_argument("--rate", type=float, default=200.0, help="status requests per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per round")
    parser.add_argument("--timeout", type=float, default=300, help="seconds the publishes may take to settle")
    parser.add_argument("--note", default="", help="what this run measures (recorded with the results)")
    parser.add_argument("--workdir", help="own stack: keep its logs (and Prefect home) in this new directory")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = parser.parse_args()
    if args.rate * args.duration > 10_000:
        parser.error("at most 10,000 requests per round")

    prefect_redis = None if args.prefect_redis == "none" else args.prefect_redis
    cache_redis = CACHE_REDIS if args.cache == "redis" else None
    stack = own_stack_or_running(
        args.api_url,
        args.workdir,
        "bench-status-",
        worker=args.worker_mode,
        prefect_redis=prefect_redis,
        cache_redis=cache_redis,
        extra_env={"MARKETPLACE_API__REALTIME_PRIORITY": str(args.api_placement == "realtime").lower()},
    )
    placement = {"shared": "the API on shared cores", "realtime": "the API at real-time priority on shared cores"}
    with stack as (running, _), FakeProvider() as provider:
        api_url = args.api_url or running.config.api_url
        if running is not None and args.api_placement == "own-cpu":
            placement["own-cpu"] = api_on_its_own_cpu(running)
        # Idle round: services that finished publishing, nothing else running.
        done = submit_many(api_url, provider.url, args.publishes)
        if not done:
            raise SystemExit("the API accepted none of the publications")
        wait_settled(api_url, done, args.timeout)
        time.sleep(5)  # let the Prefect server finish the burst's event processing
        idle = run_load(api_url, done, args.rate, args.duration, "idle (publications settled)")
        wait_responsive(api_url)
        # Busy round: new publications submitted at once, their status read while they run.
        t0 = time.monotonic()
        busy_ids = submit_many(api_url, provider.url, args.publishes)
        accepted_s = time.monotonic() - t0
        label = f"during {len(busy_ids)} publishes"
        busy = run_load(api_url, busy_ids or done, args.rate, args.duration, label)
        wait_responsive(api_url)
        settle_s = wait_settled(api_url, busy_ids, args.timeout)

    table = "\n".join([HEADER, row(idle, args.duration), row(busy, args.duration)])
    note = (
        f"{len(busy_ids)} of {args.publishes} publishes accepted in {accepted_s:.1f} s, then the round started; "
        f"answers showed publications in the pipeline until {busy.pipeline_until_s:.1f} s into the "
        f"{args.duration:g} s round; all had settled {settle_s:.0f} s after it."
    )
    print(table)
    print(note)
    if args.no_record:
        return
    command = shlex.join(["python", "bench/status_load.py", *sys.argv[1:]])
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    stack_kind = "the running stack" if args.api_url else describe(args.worker_mode, prefect_redis, cache_redis)
    stack_kind += f"; {placement[args.api_placement]}"
    setup = f"2 cores, {stack_kind}, open-loop {args.rate:g}/s for {args.duration:g} s per round"
    with RESULTS.open("a") as out:
        out.write(f"\n## Status reads under load — {when}\n\nCommand: `{command}` ({setup} from a separate process)")
        out.write(f". {args.note}\n\n" if args.note else "\n\n")
        out.write(f"{table}\n\n{note}\n")


if __name__ == "__main__":
    main()
