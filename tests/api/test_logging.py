"""Structured logs: JSON lines carrying the request id the API echoes in X-Request-ID, and the
flow run / task run ids in flow-run processes (whose logs still reach the Prefect UI)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

from api.app import create_app
from core.logging import HANDLER_NAME, configure_logging, write_prefect_logging_config
from core.settings import PROJECT_ROOT
from deployments.stack import Stack
from storage.database import reset_engine

ACCESS = "marketplace.access"


@pytest.fixture
def json_client(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app with JSON logs, plus one test-only route that logs from inside a request."""
    monkeypatch.setenv("MARKETPLACE_LOG_FORMAT", "json")
    reset_engine()
    app = create_app()

    @app.get("/test-only/log/{service_id}")
    def log_something(service_id: str) -> dict[str, str]:
        logging.getLogger("marketplace.test").warning("inside the handler")
        return {"serviceId": service_id}

    with TestClient(app) as client:
        yield client
    reset_engine()


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # fails on any line that is not JSON


def test_log_lines_are_json_with_the_request_id_echoed_in_the_response(
    json_client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    service_id = str(uuid.uuid4())
    response = json_client.get(f"/test-only/log/{service_id}", headers={"X-Request-ID": "trace-42.a_b"})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "trace-42.a_b"

    records = json_lines(capsys.readouterr().err)
    inside = next(r for r in records if r["logger"] == "marketplace.test")
    assert inside["message"] == "inside the handler"
    assert inside["level"] == "warning"
    assert inside["request_id"] == "trace-42.a_b"
    assert inside["service_id"] == service_id
    assert inside["timestamp"].endswith("Z")
    [access] = [r for r in records if r["logger"] == ACCESS]
    assert access["request_id"] == "trace-42.a_b"
    assert access["route"] == "/test-only/log/{service_id}"
    assert access["path"] == f"/test-only/log/{service_id}"
    assert (access["method"], access["status"], access["client_ip"]) == ("GET", 200, "testclient")
    assert access["duration_ms"] >= 0


UNSAFE_IDS = [None, "", "x" * 129, "has space", "semi;colon", 'a"}{"b', "a/b", "üñí".encode("latin-1")]


@pytest.mark.parametrize("incoming", UNSAFE_IDS)
def test_a_missing_or_unsafe_request_id_is_replaced_by_a_uuid4(
    json_client: TestClient, capsys: pytest.CaptureFixture[str], incoming: str | bytes | None
) -> None:
    capsys.readouterr()
    headers = {} if incoming is None else {"X-Request-ID": incoming}
    response = json_client.get("/health", headers=headers)
    request_id = response.headers["X-Request-ID"]
    assert request_id != incoming
    assert uuid.UUID(request_id).version == 4
    [access] = [r for r in json_lines(capsys.readouterr().err) if r["logger"] == ACCESS]
    assert access["request_id"] == request_id


def test_the_longest_accepted_request_id_is_kept(json_client: TestClient) -> None:
    longest = "A" * 128
    assert json_client.get("/health", headers={"X-Request-ID": longest}).headers["X-Request-ID"] == longest


def test_configure_logging_replaces_its_own_handler_and_keeps_others() -> None:
    root = logging.getLogger()
    other = logging.NullHandler()
    root.addHandler(other)
    try:
        configure_logging("INFO", "text")
        configure_logging("INFO", "json")
        ours = [h for h in root.handlers if h.get_name() == HANDLER_NAME]
        assert len(ours) == 1
        assert other in root.handlers
        assert type(ours[0].formatter).__name__ == "JsonFormatter"
    finally:
        root.removeHandler(other)


def test_text_format_appends_the_context_and_a_url_cannot_forge_a_line(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MARKETPLACE_LOG_FORMAT", "text")
    reset_engine()
    with TestClient(create_app()) as client:
        capsys.readouterr()
        client.get("/health", headers={"X-Request-ID": "text-trace-1"})
        client.get("/api/v1/services/abc%0Aforged INFO x", headers={"X-Request-ID": "text-trace-2"})
    reset_engine()
    lines = capsys.readouterr().err.splitlines()
    [health, service] = [line for line in lines if ACCESS in line]
    assert "GET /health 200" in health
    assert health.endswith("request_id=text-trace-1")
    assert "GET /api/v1/services/abc%0Aforged%20INFO%20x " in service
    assert "request_id=text-trace-2 service_id=abc\\nforged INFO x" in service
    assert not any(line.startswith("forged") for line in lines)


PROBE_FLOW = """
import logging
from prefect import flow, get_run_logger, task

@task
def check(service_id: str) -> str:
    logging.getLogger("marketplace.tasks.probe").info("plain logger inside a task")
    get_run_logger().info("task run logger")
    return service_id

@flow(name="json-log-probe")
def probe(service_id: str) -> str:
    get_run_logger().info("flow run logger")
    return check(service_id)

probe("svc-probe-1")
"""


def test_flow_run_logs_are_json_with_run_ids_and_still_reach_the_prefect_api(
    prefect_server: Stack, tmp_path: Path
) -> None:
    """The Prefect logging config we write for workers: JSON on the console, the API handler kept."""
    config = write_prefect_logging_config(tmp_path / "logging.yml")
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server.config.prefect_api_url,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_LOGGING_SETTINGS_PATH": str(config),
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE_FLOW], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    records = json_lines(result.stderr)
    by_message = {r["message"]: r for r in records}
    flow_line = by_message["flow run logger"]
    task_line = by_message["task run logger"]
    plain = by_message["plain logger inside a task"]
    flow_run_id = flow_line["flow_run_id"]
    assert uuid.UUID(flow_run_id)
    assert flow_line["service_id"] == "svc-probe-1"
    for line in (task_line, plain):
        assert line["flow_run_id"] == flow_run_id
        assert uuid.UUID(line["task_run_id"])
        assert line["service_id"] == "svc-probe-1"
    assert plain["logger"] == "marketplace.tasks.probe"

    # Prefect's API handler still ships the run's logs to the server (what the UI shows).
    with SyncPrefectClient(prefect_server.config.prefect_api_url) as client:
        deadline = time.monotonic() + 20
        shipped: set[str] = set()
        while time.monotonic() < deadline and not {"flow run logger", "task run logger"} <= shipped:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(flow_run_id)])))
            shipped = {log.message for log in logs}
            time.sleep(0.5)
    assert {"flow run logger", "task run logger"} <= shipped
