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


def test_the_usage_lifecycle_deployments_are_scheduled_by_the_server(prefect_server: Stack) -> None:
    """maintain-usage-partitions daily and rollup-usage hourly, in UTC, one run at a time each."""
    expected = {"maintain-usage-partitions": "17 2 * * *", "rollup-usage": "7 * * * *"}
    with SyncPrefectClient(prefect_server.config.prefect_api_url) as prefect:
        for name, cron in expected.items():
            deployment = prefect.read_deployment_by_name(f"{name}/{name}")
            assert [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules] == [(cron, "UTC")]  # type: ignore[union-attr]
            limit = deployment.global_concurrency_limit
            assert limit is not None and limit.limit == 1
            assert deployment.entrypoint == f"flows/usage_lifecycle.py:{name.replace('-', '_')}"


def test_statements_are_issued_on_the_first_of_each_month_utc(prefect_server: Stack) -> None:
    """issue-statements runs at 02:00 UTC on the 1st (the month before is over); quota alerts have a safety net."""
    with SyncPrefectClient(prefect_server.config.prefect_api_url) as prefect:
        statements = prefect.read_deployment_by_name("issue-statements/issue-statements")
        alerts = prefect.read_deployment_by_name("send-quota-alerts/send-quota-alerts")
    (monthly,) = [s.schedule for s in statements.schedules]
    assert (getattr(monthly, "cron", None), getattr(monthly, "timezone", None)) == ("0 2 1 * *", "UTC")
    (every_five_minutes,) = [s.schedule for s in alerts.schedules]
    assert getattr(every_five_minutes, "interval", None) is not None
    assert every_five_minutes.interval.total_seconds() == 300  # type: ignore[union-attr]
