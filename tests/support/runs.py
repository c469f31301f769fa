"""Waiting for the flow run an accepted request owes: the API answers before the run exists."""

from __future__ import annotations

import time
from typing import Any, Protocol


class _Client(Protocol):
    def get(self, url: str, **kwargs: Any) -> Any: ...


def started_run_id(
    client: _Client, service_id: str, headers: dict[str, str] | None = None, timeout: float = 30.0
) -> str:
    """The id of the service's latest publish run, once the run starter has created it in Prefect."""
    deadline = time.monotonic() + timeout
    while True:
        report = client.get(f"/api/v1/services/{service_id}/status", headers=headers).json()
        run = report.get("flowRun") or {}
        if run.get("id"):
            return str(run["id"])
        assert time.monotonic() < deadline, f"no flow run started for {service_id} in {timeout} s: {run}"
        time.sleep(0.02)


def with_started_run(client: _Client, accepted: dict[str, Any]) -> dict[str, Any]:
    """A 202 body with `flowRunId` filled in once the run exists (what tests of the run need)."""
    return {**accepted, "flowRunId": started_run_id(client, accepted["serviceId"])}
