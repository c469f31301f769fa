"""Approval round trip: from the governance decision (POST /approvals/{id}) to the service being active.

    .venv/bin/python bench/approval_latency.py [--runs 5]

Starts its own stack (Prefect server on PostgreSQL, process worker, API), publishes services that
need approval, waits until each is suspended, approves it and times resume-call-to-active.
Prints the figures and appends them to bench/RESULTS.md. Loopback only; bounded by --timeout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.auth import Role, issue_token
from bench.publish_latency import RESULTS, own_stack, percentile
from core.settings import AuthSettings
from tests.support import auth
from tests.support.provider import FakeProvider, good_spec


def wait_for(api: httpx.Client, service_id: str, status: str, timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if api.get(f"/api/v1/services/{service_id}").json()["status"] == status:
            return time.perf_counter()
        time.sleep(0.05)
    raise TimeoutError(f"{service_id} did not reach {status} in {timeout} s")


def one_round_trip(api: httpx.Client, provider_url: str, token: str, timeout: float) -> float:
    spec = good_spec(provider_url, name=f"bench-approval-{uuid.uuid4().hex[:10]}")
    spec["sla"]["supportLevel"] = "enterprise"
    service_id = api.post("/api/v1/services", json=spec).json()["serviceId"]
    wait_for(api, service_id, "pending_approval", timeout)
    time.sleep(1)  # let the run finish suspending (PAUSED) before resuming it
    t0 = time.perf_counter()
    response = api.post(
        f"/api/v1/approvals/{service_id}", json={"decision": "approve"}, headers={"Authorization": f"Bearer {token}"}
    )
    response.raise_for_status()
    return wait_for(api, service_id, "active", timeout) - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args()
    token = issue_token("bench-governance", Role.GOVERNANCE, AuthSettings())
    with (
        own_stack() as api_url,
        FakeProvider() as provider,
        httpx.Client(base_url=api_url, timeout=30, headers=auth.provider()) as api,
    ):
        samples = [one_round_trip(api, provider.url, token, args.timeout) for _ in range(args.runs)]
    row = (
        f"| resume call → active | {len(samples)} | {statistics.median(samples):.2f} | {percentile(samples, 0.95):.2f} "
        f"| {min(samples):.2f} | {max(samples):.2f} |"
    )
    table = "| measure | runs | p50 (s) | p95 (s) | min (s) | max (s) |\n| --- | --- | --- | --- | --- | --- |\n" + row
    print(table)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a") as out:
        out.write(
            f"\n## Approval round trip — {when}\n\nCommand: `python bench/approval_latency.py --runs {args.runs}` "
            f"(2 cores, process worker, worker polls every 1 s)\n\n{table}\n"
        )


if __name__ == "__main__":
    main()
