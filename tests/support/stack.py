"""The real stack for tests: a Prefect server on its own PostgreSQL database, optionally worker and API."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from prefect.client.orchestration import SyncPrefectClient
from sqlalchemy.engine import make_url

from deployments.stack import Stack, StackConfig
from tests.support.services import free_port, require_postgres, temporary_database

# The health monitor probes every live service each minute: in a test stack that is load (two task
# runs per service a test left behind) and it would suspend services whose fake provider has stopped.
# Its own tests run the flow directly (tests/flows/test_monitor_flow.py).
PAUSED_IN_TESTS = ("monitor-services",)


@contextmanager
def prefect_stack(
    workdir: Path,
    *,
    with_worker: bool,
    with_api: bool,
    with_gateway: bool = False,
    env: dict[str, str] | None = None,
    paused: Sequence[str] = PAUSED_IN_TESTS,
) -> Iterator[Stack]:
    """Start a Prefect server (PostgreSQL-backed), apply the deployments, and the parts asked for.
    The deployments named in `paused` are applied with their schedules paused."""
    require_postgres()
    with temporary_database(prefix="prefect_test") as prefect_db:
        async_url = make_url(prefect_db).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
        config = StackConfig(
            api_port=free_port(),
            gateway_port=free_port() if with_gateway else None,
            prefect_port=free_port(),
            prefect_home=workdir / "prefect-home",
            prefect_database_url=async_url,
            work_pool=f"pool-{workdir.name}"[:60],
            log_dir=workdir / "logs",
            extra_env=env or {},
        )
        stack = Stack(config)
        try:
            stack.start_prefect_server()
            stack.deploy()
            pause_deployments(stack, paused)
            if with_worker or with_api:
                stack.migrate()
            if with_worker:
                stack.start_worker()
            if with_api:
                stack.start_api()
            if with_gateway:
                stack.start_gateway()
            yield stack
        finally:
            stack.stop()


def pause_deployments(stack: Stack, names: Sequence[str]) -> None:
    """Pause scheduled deployments a test stack does not exercise through their schedules."""
    with SyncPrefectClient(stack.config.prefect_api_url) as prefect:
        for name in names:
            prefect.pause_deployment(prefect.read_deployment_by_name(f"{name}/{name}").id)
