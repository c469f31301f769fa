"""Durable intake under a crash: the API process killed (SIGKILL) between committing a submission
and creating its flow run, and between Prefect creating the run and the API recording it.

The API talks to Prefect through a small HTTP proxy that kills the API process at the chosen
moment of its `create_flow_run` call. A new API process then takes the request from the database:
the run is created, once, and recorded.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from sqlalchemy.engine import make_url

from deployments.stack import Stack, StackConfig
from storage.migrate import upgrade
from tests.support import auth
from tests.support.runs import started_run_id
from tests.support.services import free_port, require_postgres, temporary_database
from tests.support.specs import make_spec

CREATE_RUN = re.compile(r"^/api/deployments/[0-9a-f-]+/create_flow_run$")


class KillingProxy(ThreadingHTTPServer):
    """Forwards HTTP to Prefect; at the next create_flow_run call it SIGKILLs `victim`, either before the
    call reaches Prefect ("before") or after Prefect created the run but before the answer is relayed
    ("after"). Only that one call is affected; everything else passes through."""

    daemon_threads = True

    def __init__(self, target_port: int) -> None:
        super().__init__(("127.0.0.1", free_port()), _Forward)
        self.target = f"http://127.0.0.1:{target_port}"
        self.victim: int | None = None
        self.moment = "before"
        self.killed = threading.Event()
        self.client = httpx.Client(timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api"

    def arm(self, victim: int, moment: str) -> None:
        self.victim, self.moment = victim, moment
        self.killed.clear()

    def strike(self) -> None:
        assert self.victim is not None
        os.kill(self.victim, signal.SIGKILL)
        self.victim = None
        self.killed.set()


class _Forward(BaseHTTPRequestHandler):
    server: KillingProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _relay(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        aimed = self.server.victim is not None and self.command == "POST" and CREATE_RUN.match(self.path)
        if aimed and self.server.moment == "before":
            self.server.strike()
            self.close_connection = True
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        answer = self.server.client.request(self.command, self.server.target + self.path, content=body, headers=headers)
        if aimed:
            self.server.strike()
            self.close_connection = True
            return
        self.send_response(answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                self.send_header(name, value)
        self.send_header("content-length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _relay


@pytest.fixture(scope="module")
def intake_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, KillingProxy]]:
    """A Prefect server on PostgreSQL and the API (no worker: runs stay scheduled), the API calling
    Prefect through the killing proxy."""
    require_postgres()
    workdir: Path = tmp_path_factory.mktemp("intake")
    with temporary_database(prefix="prefect_test") as prefect_db, temporary_database(prefix="mkt_intake") as app_db:
        upgrade(app_db)
        prefect_port = free_port()
        proxy = KillingProxy(prefect_port)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        async_url = make_url(prefect_db).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
        config = StackConfig(
            api_port=free_port(),
            prefect_port=prefect_port,
            prefect_home=workdir / "prefect-home",
            prefect_database_url=async_url,
            work_pool=f"pool-{workdir.name}"[:60],
            log_dir=workdir / "logs",
            extra_env={"MARKETPLACE_DATABASE__URL": app_db, "MARKETPLACE_PREFECT__API_URL": proxy.url},
        )
        stack = Stack(config)
        try:
            stack.start_prefect_server()
            stack.deploy()
            stack.start_api()
            yield stack, proxy
        finally:
            stack.stop()
            proxy.shutdown()


@pytest.mark.e2e
@pytest.mark.parametrize("moment", ["before", "after"])
def test_a_submission_survives_the_api_killed_around_the_start_of_its_run(
    intake_stack: tuple[Stack, KillingProxy], moment: str
) -> None:
    stack, proxy = intake_stack
    headers = auth.provider()
    spec = make_spec(name=f"intake-{moment}")
    proxy.arm(stack.pid_of("api"), moment)
    with httpx.Client(base_url=stack.config.api_url, timeout=15) as api:
        accepted = api.post("/api/v1/services", json=spec, headers=headers)
        assert accepted.status_code == 202, accepted.text
        service_id = accepted.json()["serviceId"]
        assert proxy.killed.wait(15), "the API never tried to create the run"
    stack.start_api()  # what the stack's supervisor does for a part that died
    with httpx.Client(base_url=stack.config.api_url, timeout=15) as api:
        flow_run_id = started_run_id(api, service_id, headers)
        report = api.get(f"/api/v1/services/{service_id}/status", headers=headers).json()
    assert report["versionStatus"] == "submitted"
    with SyncPrefectClient(stack.config.prefect_api_url) as prefect:
        runs = prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"service:{service_id}"]))
        )
    assert [str(run.id) for run in runs] == [flow_run_id], f"killed {moment} the create: one run, recorded"
    assert runs[0].parameters["service_id"] == service_id
    assert UUID(flow_run_id)
