"""The deployments of prefect.yaml as the Prefect server runs them."""

from __future__ import annotations

import time

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

from deployments.stack import Stack


def test_the_reconcile_safety_net_is_scheduled_by_the_server(prefect_server: Stack) -> None:
    """The 5-minute schedule of reconcile-publications catches what a missed event would leave
    behind. The server's scheduler must create its runs (on SQLAlchemy 2.1 it failed on each try)."""
    only_reconcile = DeploymentFilter(name=DeploymentFilterName(any_=["reconcile-publications"]))
    deadline = time.monotonic() + 60
    with SyncPrefectClient(prefect_server.config.prefect_api_url) as prefect:
        while not (runs := prefect.read_flow_runs(deployment_filter=only_reconcile, limit=5)):
            assert time.monotonic() < deadline, "the scheduler made no run of reconcile-publications"
            time.sleep(1)
    assert all(run.state is not None and run.state.is_scheduled() for run in runs)
    assert "bulk DML" not in (prefect_server.config.log_dir / "prefect-server.log").read_text()  # type: ignore[operator]
