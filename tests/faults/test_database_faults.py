"""PostgreSQL connections dropped under a running publication: the run completes, nothing twice.

Drops are real: pg_terminate_backend on every backend of the test's own database, the way a
database restart or failover ends connections. One drop is aimed at the worst moment: the
registry has just accepted the entry and the run's write of the registry id is in flight
(held on a row lock, so the drop hits that very statement).
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from deployments.stack import Stack
from storage.database import build_engine, get_engine, read_change_stamp, session_scope
from storage.repositories import services
from storage.repositories.services import Actor
from tests.faults.conftest import as_provider, snapshot, task_runs, wait_settled
from tests.faults.helpers import RowLock, eventually, lock_waiters, terminate_backends
from tests.support.provider import FakeProvider, good_spec
from tests.support.registry import FakeRegistry
from tests.support.runs import started_run_id
from tests.support.services import POSTGRES_URL
from tests.support.specs import make_spec


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_pooled_connections_dropped_by_the_server_are_replaced(database_url: str) -> None:
    with session_scope() as session:
        service_id = services.create_submitted(session, make_spec(name="pooled"), Actor("acme", "provider")).id
    before = _backend_pid()
    assert terminate_backends(database_url) >= 1
    with session_scope() as session:  # pre-ping notices the dead connection and opens another
        assert services.get(session, service_id).name == "pooled"
    assert _backend_pid() != before


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_change_stamp_reader_replaces_connections_the_server_dropped(database_url: str) -> None:
    """Its connections are never pinged: a dropped one fails its read, which is made again on a new one."""
    first = read_change_stamp()
    assert terminate_backends(database_url) >= 1  # the stamp reader's connection among them
    with session_scope() as session:
        services.create_submitted(session, make_spec(name="stamped"), Actor("acme", "provider"))
    assert read_change_stamp() == first + 1
    assert read_change_stamp() == first + 1


def _backend_pid() -> int:
    with get_engine().connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts TCP connections and never says a word (a hung server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


def test_connecting_to_a_hung_server_gives_up_after_the_connect_timeout(silent_server: int) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(POSTGRES_URL).set(port=silent_server).render_as_string(hide_password=False)
    engine = build_engine(url, connect_timeout=1)
    t0 = time.monotonic()
    with pytest.raises(OperationalError), engine.connect():
        pass
    assert time.monotonic() - t0 < 5
    engine.dispose()


@pytest.mark.e2e
def test_a_publish_run_survives_connection_drops_and_records_everything_once(
    api: httpx.Client, faults_stack: Stack, registry: FakeRegistry, app_db: str
) -> None:
    registry.hold_seconds = 1.0  # the registry takes a second to answer the POST
    with FakeProvider("slow", delay_ms=600) as provider:
        spec = good_spec(provider.url, name="faults-db-drop")
        headers = as_provider(spec)
        accepted = api.post("/api/v1/services", json=spec, headers=headers)
        assert accepted.status_code == 202, accepted.text
        service_id = accepted.json()["serviceId"]
        flow_run_id = started_run_id(api, service_id, headers)

        # Drop 1: while the run's write of the registry id waits on the service row.
        eventually(lambda: registry.count("POST") >= 1, 60, "the registration request")
        lock = RowLock(app_db, "services", service_id)
        registry.hold_seconds = 0
        try:
            eventually(lambda: lock_waiters(app_db), 15, "the run's write to wait on the row lock")
            assert terminate_backends(app_db, keep=[lock.pid]) >= 1
        finally:
            lock.release()

        # Drop 2: every connection, idle or not, while the endpoint tests run.
        eventually(lambda: provider.requests["GET /health"] >= 1, 60, "the endpoint tests")
        assert terminate_backends(app_db) >= 1
        assert api.get(f"/api/v1/services/{service_id}/status", headers=headers).status_code == 200

        report = wait_settled(api, service_id, headers)
    assert report["status"] == "active", report.get("failure")
    assert task_runs(faults_stack, flow_run_id, "registry-sync")[0].run_count == 2, "the dropped attempt retried"

    stored = snapshot(service_id)
    mine = [key for key, entry in registry.entries.items() if entry["metadata"]["marketplaceId"] == service_id]
    assert mine == [stored["registry_id"]], "registered once, and that entry is the one recorded"
    assert registry.count("POST") == 1, "the retry stored the entry it already had instead of registering again"
    assert all(outcome == "passed" for _, _, outcome in stored["phases"]), stored["phases"]
    recorded = Counter((phase, check) for phase, check, _ in stored["phases"])
    assert set(recorded.values()) == {1}, f"a phase recorded twice: {recorded}"
    assert {phase for phase, _ in recorded} >= {"metadata_validation", "registry_sync", "endpoint_tests", "activation"}
    moves = [to for action, to, _, _ in stored["audit"] if action == "status_changed"]
    assert moves == ["validating", "testing", "active"]
    assert stored["events"] == ["service_submitted", "service_published"]


def test_the_api_answers_503_while_the_database_refuses_connections(
    prefect_server: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused connection (server down, connection limit reached) is a retryable 503, not a 500."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from storage.database import reset_engine
    from tests.support import auth
    from tests.support.services import free_port

    monkeypatch.setenv("MARKETPLACE_DATABASE__URL", f"postgresql+psycopg://root@127.0.0.1:{free_port()}/nowhere")
    monkeypatch.setenv("MARKETPLACE_PREFECT__API_URL", prefect_server.config.prefect_api_url)
    reset_engine()
    try:
        with TestClient(create_app()) as client:
            for response in (
                client.get("/api/v1/services"),
                client.post("/api/v1/services", json=make_spec(), headers=auth.provider()),
            ):
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "database_unavailable"
                assert response.headers["Retry-After"] == "1"
    finally:
        reset_engine()
