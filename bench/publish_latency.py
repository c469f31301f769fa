"""Publish latency: submit-to-active and POST latency one at a time, then N at once.

    .venv/bin/python bench/publish_latency.py                 # own stack (Prefect on PostgreSQL), warm worker
    .venv/bin/python bench/publish_latency.py --worker process --concurrent 20
    .venv/bin/python bench/publish_latency.py --api-url http://127.0.0.1:8000   # against `make up`

Prints the figures and appends them to bench/RESULTS.md. With its own stack it also scans every
part's log for `database is locked`, `too many clients`, tracebacks and ERROR lines. Every request
goes to loopback; the run is bounded by --timeout per publish.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from storage.migrate import upgrade  # noqa: E402
from tests.support import auth  # noqa: E402
from tests.support.provider import FakeProvider, good_spec  # noqa: E402
from tests.support.services import temporary_database  # noqa: E402
from tests.support.stack import prefect_stack  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
ERRORS: list[str] = []  # non-200 answers to the status polls (list.append is atomic)


@dataclass
class Sample:
    post_ms: float
    settle_s: float
    status: str


def publish_one(api: httpx.Client, provider_url: str, timeout: float) -> Sample:
    spec = good_spec(provider_url, name=f"bench-{uuid.uuid4().hex[:12]}")
    t0 = time.perf_counter()
    response = api.post("/api/v1/services", json=spec)
    post_ms = (time.perf_counter() - t0) * 1000
    response.raise_for_status()
    service_id = response.json()["serviceId"]
    deadline = t0 + timeout
    status = "submitted"
    while time.perf_counter() < deadline:
        read = api.get(f"/api/v1/services/{service_id}")
        if read.status_code != 200:
            ERRORS.append(f"GET {read.status_code}: {read.text[:200]}")
            time.sleep(0.05)
            continue
        status = read.json()["status"]
        if status in ("active", "failed"):
            break
        time.sleep(0.05)  # 20 reads/s per publish: cheap (cached), and 50 ms of resolution
    return Sample(post_ms, time.perf_counter() - t0, status)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[index]


def run_round(api_url: str, provider_url: str, count: int, timeout: float) -> list[Sample]:
    with (
        httpx.Client(base_url=api_url, timeout=30, headers=auth.provider()) as api,
        ThreadPoolExecutor(max_workers=count) as pool,
    ):
        return list(pool.map(lambda _: publish_one(api, provider_url, timeout), range(count)))


def summarize(label: str, samples: list[Sample]) -> str:
    settle = [s.settle_s for s in samples]
    post = [s.post_ms for s in samples]
    active = sum(s.status == "active" for s in samples)
    return (
        f"| {label} | {len(samples)} | {active} | {statistics.median(settle):.2f} | {percentile(settle, 0.95):.2f} "
        f"| {statistics.median(post):.0f} | {percentile(post, 0.95):.0f} |"
    )


PROBLEMS = re.compile(r"database is locked|too many clients|Traceback|\bERROR\b|\| ERROR ")


@contextlib.contextmanager
def own_stack(worker: str = "warm", logs: list[str] | None = None) -> Iterator[str]:
    """The real stack on free ports: Prefect server on PostgreSQL, the worker, the API.

    On exit, the problem lines of every part's log are appended to `logs`.
    """
    with temporary_database(prefix="mkt_bench") as app_db, tempfile.TemporaryDirectory() as tmp:
        upgrade(app_db)
        env = {
            "MARKETPLACE_DATABASE__URL": app_db,
            "MARKETPLACE_ENDPOINT_TESTS__ALLOW_INSECURE_ENDPOINTS": "true",
            "MARKETPLACE_RATE_LIMIT__PUBLISH_LIMIT": "100000",  # a benchmark is one client publishing a lot
            "MARKETPLACE_WORKER__MODE": worker,
        }
        with prefect_stack(Path(tmp), with_worker=True, with_api=True, env=env) as stack:
            yield stack.config.api_url
        if logs is not None:
            for log_file in sorted((Path(tmp) / "logs").glob("*.log")):
                lines = log_file.read_text(errors="replace").splitlines()
                logs.extend(f"{log_file.name}: {line}" for line in lines if PROBLEMS.search(line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", help="use a running stack instead of starting one")
    parser.add_argument("--singles", type=int, default=20, help="publishes one at a time")
    parser.add_argument("--concurrent", type=int, default=100, help="publishes submitted at once")
    parser.add_argument("--worker", choices=["warm", "process"], default="warm")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a publish may take")
    args = parser.parse_args()

    problems: list[str] = []
    stack = contextlib.nullcontext(args.api_url) if args.api_url else own_stack(args.worker, problems)
    with stack as api_url, FakeProvider() as provider:
        run_round(api_url, provider.url, 1, args.timeout)  # warm-up: imports, first deployment lookup
        single = [s for _ in range(args.singles) for s in run_round(api_url, provider.url, 1, args.timeout)]
        time.sleep(5)  # let the server finish the singles' events before the burst
        burst = run_round(api_url, provider.url, args.concurrent, args.timeout)

    header = (
        "| round | publishes | active | submit-to-active p50 (s) | p95 (s) | POST p50 (ms) | POST p95 (ms) |\n"
        "| --- | --- | --- | --- | --- | --- | --- |"
    )
    rows = [summarize(f"1 at a time ({args.singles} runs)", single), summarize(f"{args.concurrent} at once", burst)]
    table = "\n".join([header, *rows])
    if not args.api_url:
        kinds = "database is locked, too many clients, tracebacks, ERROR"
        table += f"\n\nProblem lines in the stack's logs ({kinds}): {len(problems)}"
    table += f"\n\nNon-200 answers to status reads during the rounds: {len(ERRORS)}"
    print(table)
    for line in ERRORS[:5]:
        print("  ", line)
    for line in problems[:20]:
        print("  ", line[:200])
    options = f"--singles {args.singles} --concurrent {args.concurrent}"
    command = f"python bench/publish_latency.py {options}" + (
        f" --api-url {args.api_url}" if args.api_url else f" --worker {args.worker}"
    )
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a") as out:
        out.write(f"\n## Publish latency — {when}\n\nCommand: `{command}` (2 cores, shared)\n\n{table}\n")


if __name__ == "__main__":
    main()
