"""One publication, followed by its request id and its trace: the API request, the flow run the run
starter creates later (tag `request:<id>`, Prefect's traceparent label), the run's task runs and
the provider calls of its endpoint tests.

The API runs in-process (its run starter creates the run on a real Prefect server); the run is then
executed in this process as the warm worker does. Spans go to the SDK's in-memory exporter.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any, cast
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import State
from prefect.flow_engine import run_flow
from prefect.logging.handlers import APILogHandler
from prefect.telemetry.run_telemetry import LABELS_TRACEPARENT_KEY

from api.app import create_app
from core.logging import JsonFormatter
from deployments.stack import Stack
from flows.publish import publish_service
from storage.database import reset_engine, session_scope
from storage.models import FlowRunRequest
from tests.flows.test_run_report import log_messages
from tests.support import auth
from tests.support.provider import FakeProvider, good_spec
from tests.support.runs import started_run_id
from tests.support.tracing import by_name, parent_of, recorded_spans

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

REQUEST_ID = "obs-publish-0001"


@pytest.fixture
def prefect(prefect_server: Stack) -> Iterator[SyncPrefectClient]:
    with SyncPrefectClient(prefect_server.config.prefect_api_url) as client:
        yield client


class Lines(logging.Handler):
    """Every record, as the JSON line the worker would write."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def publish_through_the_api(spec: dict[str, object], prefect_server: Stack, env: pytest.MonkeyPatch) -> str:
    """POST the spec with our X-Request-ID; the flow run id once the API's run starter created it."""
    env.setenv("MARKETPLACE_PREFECT__API_URL", prefect_server.config.prefect_api_url)
    env.setenv("MARKETPLACE_RATE_LIMIT__PUBLISH_LIMIT", "100000")
    reset_engine()
    with TestClient(create_app()) as client:
        headers = {**auth.provider(), "X-Request-ID": REQUEST_ID}
        accepted = client.post("/api/v1/services", json=spec, headers=headers)
        assert accepted.status_code == 202, accepted.text
        assert accepted.headers["X-Request-ID"] == REQUEST_ID
        return started_run_id(cast(Any, client), accepted.json()["serviceId"], headers=auth.provider())


def ancestors(by_id: dict[int, ReadableSpan], span_id: int) -> list[int]:
    """The span and its ancestors' ids, nearest first."""
    chain = [span_id]
    while (span := by_id.get(chain[-1])) is not None and (parent := parent_of(span)) is not None:
        chain.append(parent)
    return chain


def one(spans: list[ReadableSpan], **attributes: object) -> ReadableSpan:
    found = [s for s in spans if all((s.attributes or {}).get(k) == v for k, v in attributes.items())]
    assert len(found) == 1, [(s.name, dict(s.attributes or {})) for s in spans]
    return found[0]


def test_one_request_id_and_one_trace_from_the_api_request_to_the_provider_calls(
    flow_env: pytest.MonkeyPatch, prefect_server: Stack, prefect: SyncPrefectClient
) -> None:
    lines = Lines()
    loggers = [logging.getLogger(), logging.getLogger("prefect")]
    with FakeProvider() as provider, recorded_spans() as recorder:
        flow_run_id = publish_through_the_api(good_spec(provider.url, name="traced"), prefect_server, flow_env)
        run = prefect.read_flow_run(UUID(flow_run_id))
        label = run.labels[LABELS_TRACEPARENT_KEY]  # (the engine puts the run's own span there as it starts)
        for logger in loggers:
            logger.addHandler(lines)
        try:
            state = run_flow(publish_service, flow_run=run, return_type="state")
        finally:
            for logger in loggers:
                logger.removeHandler(lines)
        APILogHandler().flush()
        spans = recorder.spans()
    assert isinstance(state, State) and state.is_completed(), state

    # the request id: stored with the owed run, tagged on the run, in the run's log lines
    with session_scope() as session:
        owed = session.query(FlowRunRequest).filter_by(flow_run_id=flow_run_id).one()
        assert owed.request_id == REQUEST_ID
    assert f"request:{REQUEST_ID}" in run.tags
    assert f"publish started for request {REQUEST_ID}" in log_messages(prefect, run)
    run_loggers = ("prefect.flow_runs", "prefect.task_runs")
    of_the_run = [x for x in lines.lines if x.get("flow_run_id") == flow_run_id and x["logger"] in run_loggers]
    assert "prefect.flow_runs" in {x["logger"] for x in of_the_run}
    # (the engine's closing "Finished in state ..." is written once the run's context is gone)
    during = [x for x in of_the_run if not x["message"].startswith("Finished in state")]
    assert [x["message"] for x in during if x.get("request_id") != REQUEST_ID] == []

    # the trace: API request -> flow run -> task runs -> provider calls, one trace id
    api = one(by_name(spans, "POST /api/v1/services"), request_id=REQUEST_ID)
    assert api.kind is SpanKind.SERVER and api.context is not None
    # FastAPI records spans of its own inside ours (`fastapi.endpoint`): the run continues the span
    # current in the route, a descendant of the request's server span
    by_id = {s.context.span_id: s for s in spans if s.context}
    assert isinstance(label, str) and label.split("-")[1] == f"{api.context.trace_id:032x}"
    owed_in = int(label.split("-")[2], 16)
    assert api.context.span_id in ancestors(by_id, owed_in)
    flow = one(spans, **{"prefect.run.type": "flow", "prefect.run.id": flow_run_id})
    assert parent_of(flow) == owed_in
    assert flow.context is not None
    tasks = [s for s in spans if (s.attributes or {}).get("prefect.run.type") == "task"]
    task_ids = {t.context.span_id for t in tasks if t.context}
    assert len(tasks) >= 4 and all(parent_of(t) in {flow.context.span_id, *task_ids} for t in tasks)
    endpoint_tests = [t for t in tasks if t.name.startswith("endpoint-tests")]
    assert len(endpoint_tests) == 1, [t.name for t in tasks]
    assert parent_of(endpoint_tests[0]) == flow.context.span_id
    calls = by_name(spans, "provider call: ")
    assert {c.name for c in calls} == {
        f"provider call: check_{name}" for name in ("health", "auth", "conformance", "security", "latency")
    }
    endpoint_span = endpoint_tests[0].context
    assert endpoint_span is not None
    assert {parent_of(c) for c in calls} == {endpoint_span.span_id}
    assert {s.context.trace_id for s in [flow, *tasks, *calls] if s.context} == {api.context.trace_id}
