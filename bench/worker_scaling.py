"""How workers scale: publish throughput with 1 and 2 warm workers, and the Prefect server's limits.

    .venv/bin/python bench/worker_scaling.py                      # loads 40, 80, 160; 1, 2, 1 workers
    .venv/bin/python bench/worker_scaling.py --loads 20,40 --api-iterations 50 --no-record

One stack, as in production (bench/stack.py: Prefect's API server and its background services in
two processes on PostgreSQL with messaging on Redis, the warm worker, the API), in phases (--phases,
default 1,2,1): one warm worker, then a second warm worker process started beside it (what another
worker host adds; on this one 2-core machine it adds a process and no CPU), then one again (the
second stopped with SIGTERM), so a drift of the stack over the run shows. In each phase:

- the Prefect API alone: a plain client loop (create a flow run, set it Running, set it
  Completed, read it), one client and then several at once: requests/s and p50/p95 per call;
- publishes at each offered load (N submitted at once): completed per minute, submit-to-active
  p50/p95, and, sampled while they run, the Prefect API's latency (a flow-run read every 0.25 s)
  and the background services' event lag (time from a run's `Completed` state to its event being
  readable from the server, which is the services' event pipeline: Redis stream → persister);
- CPU seconds of each process of the stack (from /proc), PostgreSQL and Redis (every process of
  theirs on the machine, so other work on it shows too) and the whole machine.

Prints the tables and appends them to bench/RESULTS.md. Every request goes to loopback; each
publish is bounded by --timeout and the run stops starting new rounds after --budget seconds.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.publish_latency import ERRORS, Sample, percentile, run_round  # noqa: E402
from bench.stack import RESULTS, bench_stack, cpu_seconds, machine_cpu_seconds  # noqa: E402
from deployments.stack import Stack  # noqa: E402
from tests.support.provider import FakeProvider  # noqa: E402

COMPLETED_EVENT = "prefect.flow-run.Completed"


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it (a server's worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def named_cpu(command: str) -> float:
    """CPU seconds of every process on the machine whose name is `command` (postgres, redis-server)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == command:
                    total += cpu_seconds(int(entry.name))
            except (OSError, ValueError):
                continue
    return total


def cpu_snapshot(stack: Stack) -> dict[str, float]:
    snapshot = {}
    for name, proc in stack.processes:
        seconds = 0.0
        for pid in descendants(proc.pid):
            try:
                seconds += cpu_seconds(pid)
            except (OSError, ValueError):
                continue  # a process that ended between the listing and the read
        snapshot[name] = seconds
    snapshot["postgres (machine)"] = named_cpu("postgres")
    snapshot["redis (machine)"] = named_cpu("redis-server")
    snapshot["whole machine"] = machine_cpu_seconds()
    return snapshot


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


@dataclass
class ApiLoop:
    clients: int
    seconds: float
    latencies: dict[str, list[float]]
    errors: int
    cpu: dict[str, float]

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values())


def api_loop(prefect_api: str, flow_id: str, clients: int, iterations: int, stack: Stack) -> ApiLoop:
    """`clients` threads, each `iterations` times: create a flow run, Running, Completed, read it."""
    latencies: dict[str, list[float]] = {"create": [], "set_state": [], "read": []}
    errors = [0]
    lock = threading.Lock()

    def one_client() -> None:
        with httpx.Client(base_url=prefect_api, timeout=30) as client:
            for _ in range(iterations):
                try:
                    t0 = time.perf_counter()
                    created = client.post("/flow_runs/", json={"flow_id": flow_id, "state": {"type": "PENDING"}})
                    created.raise_for_status()
                    t1 = time.perf_counter()
                    run_id = created.json()["id"]
                    times = {"create": [t1 - t0], "set_state": [], "read": []}
                    for state in ("RUNNING", "COMPLETED"):
                        t = time.perf_counter()
                        client.post(
                            f"/flow_runs/{run_id}/set_state", json={"state": {"type": state}}
                        ).raise_for_status()
                        times["set_state"].append(time.perf_counter() - t)
                    t = time.perf_counter()
                    client.get(f"/flow_runs/{run_id}").raise_for_status()
                    times["read"].append(time.perf_counter() - t)
                except httpx.HTTPError:
                    with lock:
                        errors[0] += 1
                    continue
                with lock:
                    for kind, values in times.items():
                        latencies[kind].extend(v * 1000 for v in values)

    before = cpu_snapshot(stack)
    start = time.monotonic()
    threads = [threading.Thread(target=one_client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - start
    return ApiLoop(clients, seconds, latencies, errors[0], cpu_delta(before, cpu_snapshot(stack)))


@dataclass
class Probes:
    """What the samplers saw during one round of publishes."""

    api_ms: list[float] = field(default_factory=list)
    api_errors: int = 0
    first_seen: dict[str, float] = field(default_factory=dict)  # Completed event id -> wall time first read
    occurred: dict[str, float] = field(default_factory=dict)  # Completed event id -> when it happened


def completed_events(client: httpx.Client, since: datetime) -> list[dict[str, Any]]:
    """Every `Completed` flow-run event readable now that occurred since `since` (all pages)."""
    body = {"filter": {"occurred": {"since": since.isoformat()}, "event": {"name": [COMPLETED_EVENT]}}, "limit": 50}
    page = client.post("/events/filter", json=body)
    page.raise_for_status()
    data = page.json()
    events = list(data["events"])
    while data.get("next_page"):
        page = client.get(data["next_page"])
        page.raise_for_status()
        data = page.json()
        events.extend(data["events"])
    return events


@contextmanager
def probing(prefect_api: str, since: datetime) -> Iterator[Probes]:
    """Sample the Prefect API's read latency every 0.25 s and the readable Completed events every 0.5 s."""
    probes, stop = Probes(), threading.Event()

    def api_sampler() -> None:
        with httpx.Client(base_url=prefect_api, timeout=30) as client:
            while not stop.wait(0.25):
                t0 = time.perf_counter()
                try:
                    client.post("/flow_runs/filter", json={"limit": 5}).raise_for_status()
                except httpx.HTTPError:
                    probes.api_errors += 1
                    continue
                probes.api_ms.append((time.perf_counter() - t0) * 1000)

    def event_sampler() -> None:
        with httpx.Client(base_url=prefect_api, timeout=30) as client:
            while not stop.wait(0.5):
                try:
                    events = completed_events(client, since)
                except httpx.HTTPError:
                    continue
                now = time.time()
                for event in events:
                    if event["id"] not in probes.first_seen:
                        probes.first_seen[event["id"]] = now
                        probes.occurred[event["id"]] = datetime.fromisoformat(event["occurred"]).timestamp()

    threads = [threading.Thread(target=api_sampler), threading.Thread(target=event_sampler)]
    for thread in threads:
        thread.start()
    try:
        yield probes
    finally:
        stop.set()
        for thread in threads:
            thread.join()


@dataclass
class Round:
    phase: int
    workers: int
    load: int
    samples: list[Sample]
    span_s: float
    cpu: dict[str, float]
    probes: Probes
    drained_after_s: float | None  # from the last publish settling to its events all being readable
    cpu_total: dict[str, float]  # from the first submission until the events were readable (or the bound)

    @property
    def active(self) -> int:
        return sum(s.status == "active" for s in self.samples)

    @property
    def per_minute(self) -> float:
        return self.active / self.span_s * 60 if self.span_s else 0.0

    def settle(self, q: float) -> float:
        return percentile([s.settle_s for s in self.samples], q)

    def event_lag(self, q: float) -> float:
        lags = [self.probes.first_seen[i] - self.probes.occurred[i] for i in self.probes.first_seen]
        return percentile(lags, q) if lags else float("nan")


def publish_round(
    stack: Stack, provider_url: str, phase: tuple[int, int], load: int, timeout: float, drain_timeout: float
) -> Round:
    prefect_api, api_url = stack.config.prefect_api_url, stack.config.api_url
    since = datetime.now(UTC)
    before = cpu_snapshot(stack)
    with probing(prefect_api, since) as probes:
        start = time.monotonic()
        samples = run_round(api_url, provider_url, load, timeout)
        span = time.monotonic() - start
        cpu = cpu_delta(before, cpu_snapshot(stack))
        # Keep reading events until this round's Completed events are all readable (the services
        # caught up), within drain_timeout.
        settled_at, drained = time.monotonic(), None
        active = sum(s.status == "active" for s in samples)
        while time.monotonic() - settled_at < drain_timeout:
            if len(probes.first_seen) >= active:
                drained = time.monotonic() - settled_at
                break
            time.sleep(0.25)
        cpu_total = cpu_delta(before, cpu_snapshot(stack))
    # The span ends when the last publish became active (publishedAt), not when our poll saw it.
    last = max((s.settle_s for s in samples if s.status == "active"), default=span)
    return Round(*phase, load, samples, min(span, last + 0.5), cpu, probes, drained, cpu_total)


def ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q):.0f}" if values else "-"


def api_table(loops: list[tuple[int, int, ApiLoop]]) -> str:
    lines = [
        "| phase | warm workers running (idle) | clients | requests | requests/s | create p50/p95 (ms) "
        "| set_state p50/p95 (ms) | read p50/p95 (ms) | errors | CPU s: prefect-server | prefect-services "
        "| postgres (machine) | whole machine (cores busy) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for phase, workers, loop in loops:
        lat, cpu = loop.latencies, loop.cpu
        lines.append(
            f"| {phase} | {workers} | {loop.clients} | {loop.requests} | {loop.requests / loop.seconds:.0f} "
            f"| {ms(lat['create'], 0.5)} / {ms(lat['create'], 0.95)} "
            f"| {ms(lat['set_state'], 0.5)} / {ms(lat['set_state'], 0.95)} "
            f"| {ms(lat['read'], 0.5)} / {ms(lat['read'], 0.95)} | {loop.errors} "
            f"| {cpu['prefect-server']:.1f} | {cpu['prefect-services']:.1f} | {cpu['postgres (machine)']:.1f} "
            f"| {cpu['whole machine']:.1f} ({cpu['whole machine'] / loop.seconds:.2f}) |"
        )
    return "\n".join(lines)


def publish_table(rounds: list[Round]) -> str:
    lines = [
        "| phase | warm workers | publishes at once | active | span (s) | completed/min "
        "| submit-to-active p50 / p95 (s) | Prefect API read p50 / p95 (ms) | event lag p50 / p95 / max (s) "
        "| events all readable after (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rounds:
        drained = f"{r.drained_after_s:.1f}" if r.drained_after_s is not None else "not within the bound"
        lines.append(
            f"| {r.phase} | {r.workers} | {r.load} | {r.active} | {r.span_s:.1f} | **{r.per_minute:.0f}** "
            f"| {r.settle(0.5):.2f} / {r.settle(0.95):.2f} "
            f"| {ms(r.probes.api_ms, 0.5)} / {ms(r.probes.api_ms, 0.95)} "
            f"| {r.event_lag(0.5):.1f} / {r.event_lag(0.95):.1f} / {r.event_lag(1.0):.1f} | {drained} |"
        )
    return "\n".join(lines)


def cpu_table(rounds: list[Round]) -> str:
    names = list(dict.fromkeys(n for r in rounds for n in r.cpu if n != "whole machine"))
    header = "| phase | warm workers | publishes | " + " | ".join(names)
    header += " | rest of the machine (this load generator, other users) | whole machine (cores busy) |"
    lines = [header, "| " + " | ".join(["---"] * (len(names) + 5)) + " |"]
    for r in rounds:
        per = [f"{r.cpu.get(n, 0.0):.1f}" if n in r.cpu else "-" for n in names]
        machine = r.cpu["whole machine"]
        rest = machine - sum(v for n, v in r.cpu.items() if n != "whole machine")
        busy = f"{rest:.1f} | {machine:.1f} ({machine / r.span_s:.2f})"
        lines.append(f"| {r.phase} | {r.workers} | {r.load} | " + " | ".join(per) + f" | {busy} |")
    return "\n".join(lines)


def per_publish_table(rounds: list[Round]) -> str:
    """CPU seconds per publish of each part, counted until the round's events were all readable (the
    services' catching up included), and the publishes per minute that would fill one core of it."""
    names = ["prefect-server", "prefect-services", "api", "postgres (machine)"]
    lines = [
        "| phase | warm workers | publishes | worker(s) CPU s/publish | "
        + " | ".join(f"{n} CPU s/publish" for n in names)
        + " | publishes/min one core of prefect-server / prefect-services would carry |",
        "| " + " | ".join(["---"] * (len(names) + 5)) + " |",
    ]
    for r in rounds:
        n = max(r.active, 1)
        cpu = r.cpu_total
        workers = sum(v for k, v in cpu.items() if k.startswith("worker"))
        cells = [f"{cpu.get(name, 0.0) / n:.3f}" for name in names]
        server, services = cpu["prefect-server"] / n, cpu["prefect-services"] / n
        ceiling = f"{60 / server:.0f} / {60 / services:.0f}" if server and services else "-"
        lines.append(
            f"| {r.phase} | {r.workers} | {r.load} | {workers / n:.3f} | " + " | ".join(cells) + f" | {ceiling} |"
        )
    return "\n".join(lines)


def ratios(rounds: list[Round]) -> str:
    """Each round with more than one worker against every one-worker round of the same load."""
    parts = []
    for load in sorted({r.load for r in rounds}):
        ones = [r for r in rounds if r.load == load and r.workers == 1 and r.per_minute]
        for more in (r for r in rounds if r.load == load and r.workers > 1):
            against = ", ".join(
                f"{more.per_minute / one.per_minute:.2f}x the completions/min and "
                f"{more.settle(0.95) / one.settle(0.95):.2f}x the p95 of phase {one.phase}"
                for one in ones
            )
            parts.append(f"{load} at once, {more.workers} workers (phase {more.phase}): {against}")
    return "More warm workers against one, same stack, same run: " + "; ".join(parts) if parts else ""


def flow_id_for_loop(prefect_api: str) -> str:
    with httpx.Client(base_url=prefect_api, timeout=30) as client:
        response = client.post("/flows/", json={"name": f"bench-api-loop-{uuid.uuid4().hex[:6]}"})
        response.raise_for_status()
        return str(response.json()["id"])


def wait_quiet(stack: Stack, seconds: float, limit: float = 60) -> None:
    """Until the Prefect processes used under half a core for `seconds` (the last round's events), at most `limit`."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = cpu_snapshot(stack)
        time.sleep(seconds)
        delta = cpu_delta(before, cpu_snapshot(stack))
        if delta["prefect-server"] + delta["prefect-services"] < 0.5 * seconds:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", default="40,80,160", help="publishes submitted at once, per round")
    parser.add_argument(
        "--phases", default="1,2,1", help="warm worker processes in each phase, in order (a worker added or stopped)"
    )
    parser.add_argument("--api-clients", default="1,8", help="concurrent clients of the Prefect API loop")
    parser.add_argument("--api-iterations", type=int, default=40, help="loop iterations per client (4 requests each)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds a publish may take")
    parser.add_argument("--budget", type=float, default=500, help="no new round starts after this many seconds")
    parser.add_argument("--workdir", help="keep the stack's logs in this new directory")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = parser.parse_args()
    loads = [int(n) for n in args.loads.split(",")]
    clients = [int(n) for n in args.api_clients.split(",")]
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-scaling-"))

    began = time.monotonic()
    problems: list[str] = []
    loops: list[tuple[int, int, ApiLoop]] = []
    rounds: list[Round] = []
    skipped: list[str] = []
    with bench_stack(workdir, problems=problems) as (stack, _), FakeProvider() as provider:
        run_round(stack.config.api_url, provider.url, 1, args.timeout)  # warm-up: imports, deployment lookups
        run_round(stack.config.api_url, provider.url, 4, args.timeout)
        flow_id = flow_id_for_loop(stack.config.prefect_api_url)
        for number, workers in enumerate((int(n) for n in args.phases.split(",")), 1):
            running = [name for name, _ in stack.processes if name.startswith("worker")]
            for n in range(len(running) + 1, workers + 1):
                stack.start_warm_worker(f"worker-{n}")
                time.sleep(8)  # its imports and first poll, before it is measured
            for name in running[workers:]:
                stack.stop_part(name)  # SIGTERM: it drains (nothing in flight between rounds)
            wait_quiet(stack, 2)
            for n in clients:
                loops.append(
                    (number, workers, api_loop(stack.config.prefect_api_url, flow_id, n, args.api_iterations, stack))
                )
            for load in loads:
                if time.monotonic() - began > args.budget:
                    skipped.append(f"phase {number} ({workers} worker(s)) x {load}")
                    continue
                wait_quiet(stack, 2)
                phase = (number, workers)
                rounds.append(publish_round(stack, provider.url, phase, load, args.timeout, drain_timeout=60))
                print(publish_table(rounds[-1:]).splitlines()[-1], flush=True)

    report = [
        "Prefect API alone (plain client loop: create a flow run, set Running, set Completed, read it):",
        api_table(loops),
        "Publishes submitted at once (each row one round; the Prefect API read and the event lag sampled during it):",
        publish_table(rounds),
        ratios(rounds),
        "CPU seconds during each round (from the first submission until the last publish settled):",
        cpu_table(rounds) if rounds else "",
        "Per publish (CPU until the round's events were all readable):",
        per_publish_table(rounds),
    ]
    if skipped:
        report.append(f"Rounds not run (the --budget of {args.budget:g} s was spent): {', '.join(skipped)}")
    kinds = "database is locked, too many clients, tracebacks, ERROR"
    report.append(f"Problem lines in the stack's logs ({kinds}): {len(problems)}")
    report.append(f"Failed API requests (publishes not accepted, status reads not answered 200): {len(ERRORS)}")
    report.append(f"Wall time of the benchmark: {time.monotonic() - began:.0f} s")
    text = "\n\n".join(part for part in report if part)
    print(text)
    for line in problems[:20]:
        print("  ", line[:200])
    if args.no_record:
        return
    command = shlex.join(["python", "bench/worker_scaling.py", *sys.argv[1:]])
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    setup = (
        "2 cores, shared; Prefect API server and niced services in two processes on PostgreSQL, messaging on "
        "Redis; warm workers of 32 threads; the second worker is a second process on the same machine"
    )
    with RESULTS.open("a") as out:
        out.write(f"\n## Worker scaling — {when}\n\nCommand: `{command}` ({setup})\n\n{text}\n")


if __name__ == "__main__":
    main()
