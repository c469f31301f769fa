"""monitor-services as the Prefect server holds it: scheduled every interval, one run at a time."""

from __future__ import annotations

from prefect.client.orchestration import SyncPrefectClient

from core.settings import HealthSettings
from deployments.stack import Stack


def test_monitor_services_is_scheduled_at_the_health_interval(prefect_server: Stack) -> None:
    with SyncPrefectClient(prefect_server.config.prefect_api_url) as prefect:
        deployment = prefect.read_deployment_by_name("monitor-services/monitor-services")
    intervals = [s.schedule.interval.total_seconds() for s in deployment.schedules]  # type: ignore[union-attr]
    assert intervals == [HealthSettings().interval_seconds], "the schedule and the setting agree"
    assert all(s.active for s in deployment.schedules)
    assert deployment.concurrency_limit == 1 or deployment.global_concurrency_limit is not None
    assert deployment.entrypoint == "flows/monitor.py:monitor_services"
