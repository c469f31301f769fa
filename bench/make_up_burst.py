"""Bursts against `make up` exactly as a newcomer starts it: a fresh clone of HEAD, `make up` there
(its own virtual environment, the embedded defaults: SQLite for the marketplace and for Prefect, no
Redis, the default ports 8000 and 4200), nothing else configured.

    .venv/bin/python bench/make_up_burst.py                   # clone, make up, measure, Ctrl-C it
    .venv/bin/python bench/make_up_burst.py --clone /tmp/mu   # reuse a clone (and its .venv); state wiped

Measures, in this order on one stack:
1. duplicates: N identical-name pairs sent at once: per pair exactly one 202 and one 409, no 5xx;
2. a burst of M distinct publishes at once: every POST 202 and its latency, every service `active`;
   during that burst, the Prefect UI's Resume call (`POST /api/flow_runs/{id}/resume`) for a run
   waiting for approval, and that service reaching `active`;
3. `database is locked` lines (and tracebacks) in everything the stack printed.
Prints the table and appends it to bench/RESULTS.md. Requests go to loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.publish_latency import percentile  # noqa: E402
from bench.stack import RESULTS  # noqa: E402
from tests.support import auth  # noqa: E402
from tests.support.provider import FakeProvider, good_spec  # noqa: E402

API = "http://127.0.0.1:8000"
PREFECT = "http://127.0.0.1:4200/api"
LOCKED = re.compile(r"database is locked")
TRACEBACK = re.compile(r"Traceback \(most recent call last\)")


def fresh_clone(clone: Path | None) -> Path:
    """HEAD of this repository in a directory of its own, with no state left by an earlier run."""
    if clone is None:
        clone = Path(tempfile.mkdtemp(prefix="make-up-")) / "marketplace"
    if not (clone / ".git").exists():
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    else:
        subprocess.run(["git", "-C", str(clone), "pull", "--quiet", str(ROOT), "HEAD"], check=True)
    for state in (".prefect", "var"):
        shutil.rmtree(clone / state, ignore_errors=True)
    return clone


def start_make_up(clone: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """`make up` with no MARKETPLACE_/PREFECT_ variables (a newcomer's shell), in a session of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MARKETPLACE_", "PREFECT_", "VIRTUAL_ENV"))}
    log = log_path.open("wb")
    return subprocess.Popen(
        ["make", "up"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_ready(proc: subprocess.Popen[bytes], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"make up exited with {proc.returncode}")
        try:
            if httpx.get(f"{API}/ready", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"make up not ready after {timeout:.0f} s")


def post(api: httpx.Client, spec: dict[str, Any]) -> tuple[int, float, str | None]:
    t0 = time.perf_counter()
    try:
        response = api.post("/api/v1/services", json=spec)
    except httpx.HTTPError as exc:
        return 0, (time.perf_counter() - t0) * 1000, type(exc).__name__
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    return response.status_code, (time.perf_counter() - t0) * 1000, body.get("serviceId")


def at_once(count: int, call: Any) -> list[Any]:
    """`call(i)` for i in range(count), all released at the same instant."""
    barrier = threading.Barrier(count)

    def run(i: int) -> Any:
        barrier.wait()
        return call(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def wait_status(api: httpx.Client, service_id: str, wanted: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    status = "unknown"
    while time.monotonic() < deadline:
        status = api.get(f"/api/v1/services/{service_id}").json().get("status", "unknown")
        if status in wanted:
            return status
        time.sleep(1)
    return status


def duplicate_pairs(api: httpx.Client, provider_url: str, pairs: int) -> dict[str, int]:
    names = [f"pair-{uuid.uuid4().hex[:10]}" for _ in range(pairs)]
    specs = [good_spec(provider_url, name=name) for name in names for _ in range(2)]
    answers = at_once(len(specs), lambda i: post(api, specs[i])[0])
    per_pair = [sorted(answers[2 * i : 2 * i + 2]) for i in range(pairs)]
    return {
        "pairs": pairs,
        "one 202 and one 409": sum(pair == [202, 409] for pair in per_pair),
        "5xx": sum(code >= 500 or code == 0 for code in answers),
    }


def resume_from_ui(flow_run_id: str) -> tuple[int, float]:
    """What the Prefect UI's Resume form sends."""
    body = {"run_input": {"decision": "approve", "reviewer": "bench-governance", "comment": "resumed from the UI"}}
    t0 = time.perf_counter()
    response = httpx.post(f"{PREFECT}/flow_runs/{flow_run_id}/resume", json=body, timeout=120)
    outcome = response.json().get("status") if response.status_code < 300 else response.text[:100]
    return f"{response.status_code} {outcome}", (time.perf_counter() - t0) * 1000


def waiting_for_approval(api: httpx.Client, provider_url: str) -> tuple[str, str]:
    spec = good_spec(provider_url, name=f"approval-{uuid.uuid4().hex[:10]}")
    spec["compliance"]["level"] = "restricted"
    code, _, service_id = post(api, spec)
    assert code == 202, f"approval candidate not accepted: {code}"
    assert service_id
    status = wait_status(api, service_id, {"pending_approval", "failed"}, 300)
    assert status == "pending_approval", status
    deadline = time.monotonic() + 120
    while True:  # `pending_approval` is written just before the run suspends: wait for the suspension
        run = api.get(f"/api/v1/services/{service_id}/status").json()["flowRun"]
        if run["state"] == "PAUSED":
            return service_id, run["id"]
        assert time.monotonic() < deadline, f"the approval run never suspended: {run}"
        time.sleep(0.5)


def burst(api: httpx.Client, provider_url: str, count: int, resume_run: str) -> dict[str, Any]:
    specs = [good_spec(provider_url, name=f"burst-{uuid.uuid4().hex[:10]}") for _ in range(count)]
    resume: dict[str, Any] = {}

    def resume_midway() -> None:
        time.sleep(1.0)  # the burst's runs are starting and running
        resume["status"], resume["ms"] = resume_from_ui(resume_run)

    resumer = threading.Thread(target=resume_midway)
    resumer.start()
    started = time.monotonic()
    answers = at_once(count, lambda i: post(api, specs[i]))
    resumer.join()
    ids = [service_id for code, _, service_id in answers if code == 202 and service_id]
    statuses = [wait_status(api, service_id, {"active", "failed"}, 900) for service_id in ids]
    latencies = [ms for _, ms, _ in answers]
    return {
        "accepted": len(ids),
        "non-202": [code for code, _, _ in answers if code != 202],
        "post_p50": statistics.median(latencies),
        "post_p95": percentile(latencies, 0.95),
        "post_max": max(latencies),
        "active": statuses.count("active"),
        "all_settled_s": time.monotonic() - started,
        "resume": resume,
    }


def stop_make_up(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in make up's terminal
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clone", type=Path, help="reuse this clone (its .venv kept, its state wiped)")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    clone = fresh_clone(args.clone)
    log_path = clone.parent / "make-up.log"
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    proc = start_make_up(clone, log_path)
    try:
        ready_s = wait_ready(proc, 900)
        with FakeProvider() as provider, httpx.Client(base_url=API, timeout=120, headers=auth.provider()) as api:
            warm_code, _, warm_id = post(api, good_spec(provider.url, name=f"warm-{uuid.uuid4().hex[:8]}"))
            assert warm_code == 202
            assert warm_id
            assert wait_status(api, warm_id, {"active"}, 300) == "active"
            pairs = duplicate_pairs(api, provider.url, args.pairs)
            approval_id, approval_run = waiting_for_approval(api, provider.url)
            result = burst(api, provider.url, args.burst, approval_run)
            approved = wait_status(api, approval_id, {"active", "failed"}, 300)
    finally:
        stop_make_up(proc)
    output = log_path.read_text(errors="replace")
    locked = [line for line in output.splitlines() if LOCKED.search(line)]
    tracebacks = len(TRACEBACK.findall(output))
    rows = [
        ("make up ready (fresh clone, venv included)", f"{ready_s:.0f} s"),
        (
            f"{args.pairs} identical pairs at once: one 202 + one 409",
            f"{pairs['one 202 and one 409']} of {pairs['pairs']}",
        ),
        ("  5xx answers among them", str(pairs["5xx"])),
        (f"{args.burst} publishes at once: 202", f"{result['accepted']} of {args.burst} (others: {result['non-202']})"),
        (
            "  POST p50 / p95 / max",
            f"{result['post_p50']:.0f} / {result['post_p95']:.0f} / {result['post_max']:.0f} ms",
        ),
        ("  active", f"{result['active']} of {result['accepted']}, all settled {result['all_settled_s']:.0f} s"),
        (
            "Prefect UI Resume during the burst",
            f"HTTP {result['resume'].get('status')} in {result['resume'].get('ms', 0):.0f} ms; service {approved}",
        ),
        ("`database is locked` lines in the stack's output", str(len(locked))),
        ("tracebacks in the stack's output", str(tracebacks)),
    ]
    table = "| measure | result |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    print(table)
    for line in locked[:10]:
        print("  ", line[:200])
    if args.no_record:
        return
    command = shlex.join(["python", "bench/make_up_burst.py", *sys.argv[1:]])
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a") as out:
        out.write(
            f"\n## `make up` under a burst — {when}\n\nCommand: `{command}` (2 cores, shared; a fresh clone of "
            f"{head.stdout.strip()}, `make up` with no configuration: SQLite for both databases, no Redis)\n\n{table}\n"
        )


if __name__ == "__main__":
    main()
