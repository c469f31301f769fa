"""monitor-services end to end on the real pieces: PostgreSQL, Redis, a Prefect server, a gateway
process and a fake provider on loopback that is made to fail and then to recover.

breach -> suspended after N checks -> the gateway answers 503 with the reason -> recovery ->
reinstated after N checks -> the gateway routes again; audit trail, outbox events and governance
webhooks along the way; a rerun for the same moment changes nothing; the provider's credential
reaches the provider and nowhere else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import orjson
import pytest
import redis
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from sqlalchemy import func, select, update

from core.plans import Plan
from deployments.stack import Stack
from flows.monitor import monitor_services
from storage.database import reset_engine, session_scope
from storage.health_models import ServiceHealthCheck
from storage.models import Service, ServiceVersion, UsageRecord
from storage.repositories import audit, outbox
from tasks import health as health_tasks
from tests.support.gateway import GatewayProcess, add_service, consumer_with_key, set_credential
from tests.support.llm_provider import LlmProvider
from tests.support.services import REDIS_URL, require_tcp
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

TOKEN = "provider-credential-7f3a9c"
HOOK_SECRET = "governance-hook-secret"
SLA = {"availability": 99.0, "maxLatencyMs": 5000}


def eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def usage_rows(service_id: str) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).where(UsageRecord.service_id == service_id)) or 0


def checks_of(service_id: str) -> list[ServiceHealthCheck]:
    with session_scope() as session:
        stmt = select(ServiceHealthCheck).where(ServiceHealthCheck.service_id == service_id)
        return list(session.scalars(stmt.order_by(ServiceHealthCheck.id)))


def moves(service_id: str) -> list[tuple[str, str | None]]:
    with session_scope() as session:
        return [(a.actor, a.to_status) for a in audit.for_service(session, service_id) if a.action == "status_changed"]


def events(service_id: str) -> list[str]:
    with session_scope() as session:
        return [e.event_type for e in outbox.for_aggregate(session, service_id)]


def after(previous: datetime) -> datetime:
    """Now, but at least one interval (1 s here) after the previous check: a new interval."""
    return max(datetime.now(UTC), previous + timedelta(seconds=1))


def hooks(receiver: WebhookReceiver) -> list[str]:
    return [orjson.loads(r.body)["type"] for r in receiver.received]


@pytest.fixture
def redis_url() -> str:
    require_tcp("127.0.0.1", 6379, "Redis")
    redis.Redis.from_url(REDIS_URL).flushdb()
    return REDIS_URL


def test_breach_suspends_the_gateway_answers_503_and_recovery_reinstates(
    flow_env: pytest.MonkeyPatch, database_url: str, redis_url: str, prefect_server: Stack, tmp_path: Path
) -> None:
    with LlmProvider() as provider, WebhookReceiver(HOOK_SECRET) as governance:
        for name, value in {
            "MARKETPLACE_CACHE__REDIS_URL": redis_url,
            "MARKETPLACE_HEALTH__CONSECUTIVE_CHECKS": "2",
            "MARKETPLACE_HEALTH__INTERVAL_SECONDS": "1",
            "MARKETPLACE_HEALTH__WINDOW_SECONDS": "60",
            "MARKETPLACE_WEBHOOKS__GOVERNANCE_URLS": orjson.dumps([governance.url]).decode(),
            "MARKETPLACE_WEBHOOKS__SECRET": HOOK_SECRET,
        }.items():
            flow_env.setenv(name, value)
        reset_engine()
        service_id = add_service(provider.url, name="health-chat")
        with session_scope() as session:  # as the pipeline leaves it: a spec with an SLA, its version row
            spec = {"name": "health-chat", "version": "1.0.0", "endpoint": {"url": provider.url}, "sla": SLA}
            session.execute(update(Service).where(Service.id == service_id).values(spec={**spec, "pricing": {}}))
            session.add(
                ServiceVersion(service_id=service_id, name="health-chat", version="1.0.0", spec=spec, status="active")
            )
        set_credential(service_id, TOKEN)
        _, key = consumer_with_key("consumer-h", [service_id], Plan(name="test", requests_per_minute=1000))
        env = {
            "MARKETPLACE_DATABASE__URL": database_url,
            "MARKETPLACE_GATEWAY__JOURNAL_DIR": str(tmp_path / "journal"),
            "MARKETPLACE_GATEWAY__DIRECTORY_REFRESH_SECONDS": "0.2",
            "MARKETPLACE_CACHE__REDIS_URL": redis_url,
            "MARKETPLACE_GATEWAY__REDIS_URL": redis_url,
            "MARKETPLACE_HEALTH__INTERVAL_SECONDS": "1",
        }
        with GatewayProcess(env, tmp_path / "gateway.log") as gw:

            def call() -> httpx.Response:
                url = f"{gw.url}/api/v1/services/{service_id}/invoke"
                return httpx.post(url, json={"input": {}}, headers={"Authorization": f"Bearer {key}"}, timeout=10)

            # healthy, with traffic: the check counts the gateway's calls and the probes
            assert [call().status_code for _ in range(3)] == [200, 200, 200]
            eventually(lambda: usage_rows(service_id) == 3, 15, "the usage records")
            first = datetime.now(UTC)
            assert monitor_services(at=first)["checked"] == 1
            (healthy,) = checks_of(service_id)
            assert (healthy.requests, healthy.errors, healthy.availability, healthy.breached) == (3, 0, 100.0, False)
            probe = [r for r in provider.requests if r[0] == "/" and r[1].get("x-marketplace-consumer")]
            monitor_calls = [h for _, h, _ in probe if h["x-marketplace-consumer"] == "marketplace-health-monitor"]
            assert monitor_calls, "the authenticated probe reached the provider"
            assert monitor_calls[0]["authorization"] == f"Bearer {TOKEN}", "with the provider's stored credential"
            assert "x-marketplace-signature" in monitor_calls[0], "signed as the gateway signs"

            # the provider fails: one breaching check is not enough, the second suspends
            provider.mode = "error500"
            assert [call().status_code for _ in range(2)] == [502, 502]  # the provider's 500, as upstream_error
            eventually(lambda: usage_rows(service_id) == 5, 15, "the failed calls' usage records")
            b1 = after(first)
            assert monitor_services(at=b1)["suspended"] == 0
            assert call().status_code == 502, "still routed after one breaching check"
            breaching = checks_of(service_id)[-1]
            assert (breaching.requests, breaching.errors, breaching.breached) == (5, 2, True)
            b2 = after(b1)
            state = monitor_services(at=b2, return_state=True)
            assert state.result()["suspended"] == 1
            suspending_run = state.state_details.flow_run_id

            refused = eventually(lambda: (r := call()).status_code == 503 and r, 10, "the gateway to refuse")
            error = refused.json()["error"]
            assert error["code"] == "service_unavailable"
            assert "SLA breached in 2 consecutive health checks" in error["message"]
            assert refused.headers["Retry-After"] == "1"

            # a rerun for the same moment: nothing recorded, moved or sent twice
            trail, sent, hooks_before = moves(service_id), events(service_id), hooks(governance)
            assert monitor_services(at=b2) == {
                "checked": 0,
                "repeated": 1,
                "breached": 1,
                "suspended": 0,
                "reinstated": 0,
            }
            assert (moves(service_id), events(service_id), hooks(governance)) == (trail, sent, hooks_before)
            assert trail[-1] == ("health-monitor", "suspended")
            assert sent.count("service_suspended") == 1
            assert hooks_before.count("marketplace.service_suspended") == 1, "governance told once"

            # recovery: the window moves past the failures; two healthy checks reinstate
            provider.mode = "ok"
            c1 = b2 + timedelta(seconds=61)
            assert monitor_services(at=c1)["reinstated"] == 0
            assert call().status_code == 503, "still suspended after one healthy check"
            assert monitor_services(at=c1 + timedelta(seconds=1))["reinstated"] == 1
            eventually(lambda: call().status_code == 200, 10, "the gateway to route again")

        assert moves(service_id)[-2:] == [("health-monitor", "suspended"), ("health-monitor", "active")]
        assert events(service_id)[-2:] == ["service_suspended", "service_updated"]
        assert hooks(governance).count("marketplace.service_updated") == 1
        assert all(r.verified for r in governance.received)
        assert [c.action for c in checks_of(service_id)] == [None, None, "suspended", None, "reinstated"]

    with SyncPrefectClient(prefect_server.config.prefect_api_url) as prefect:
        logs = prefect.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[suspending_run])))
        assert any("suspended health-chat" in log.message for log in logs), "the run's log says what it did"
        assert not any(TOKEN in log.message for log in logs)
        artifacts = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(str(suspending_run))]))
        )
        assert [a.key for a in artifacts] == ["service-health"], "the run's page shows the verdicts as a table"
    for stored in checks_of(service_id):
        assert (
            TOKEN
            not in orjson.dumps({k: v for k, v in vars(stored).items() if not k.startswith("_")}, default=str).decode()
        )


def test_services_are_checked_in_batches_and_one_services_failure_stays_its_own(
    flow_env: pytest.MonkeyPatch, database_url: str, prefect_server: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five services in batches of two: three probe and three record task runs, not ten of each; a
    service whose check cannot be stored (after its retries) fails the run, and only that service."""
    flow_env.setenv("MARKETPLACE_HEALTH__BATCH_SIZE", "2")
    flow_env.setenv("MARKETPLACE_HEALTH__INTERVAL_SECONDS", "1")
    with LlmProvider() as provider:
        ids = [add_service(provider.url, name=f"batch-chat-{n}") for n in range(5)]
        unlucky = ids[2]
        recorded = health_tasks.record_health_check

        def record_or_fail(inp: health_tasks.CheckInput) -> health_tasks.CheckResult:
            if inp.target.service_id == unlucky:
                raise RuntimeError("the database refused this one")
            return recorded(inp)

        monkeypatch.setattr(health_tasks, "record_health_check", record_or_fail)
        state = monitor_services(at=datetime.now(UTC), return_state=True)

    assert state.is_failed()
    assert unlucky in str(state.message), "the run says which service has no check"
    assert [len(checks_of(s)) for s in ids] == [1, 1, 0, 1, 1], "the others in its batch were recorded"
    run_filter = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(str(state.state_details.flow_run_id))]))

    def task_runs() -> list[str] | None:  # task runs reach the server through its event pipeline, a little later
        with SyncPrefectClient(prefect_server.config.prefect_api_url) as prefect:
            names = sorted(run.name.rsplit("-", 1)[0] for run in prefect.read_task_runs(flow_run_filter=run_filter))
        return names if len(names) >= 7 else None

    names = eventually(task_runs, 20, "the run's task runs")
    assert names == ["list-monitored-services"] + ["probe-services"] * 3 + ["record-health-checks"] * 3, names
