"""What the gateway tells operators about a call: its request id (the caller's, kept end to end),
its metrics at /metrics, and, with tracing configured, its spans at a real OTLP receiver."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from core.plans import Plan
from core.settings import PROJECT_ROOT
from tests.gateway.conftest import Setup
from tests.gateway.test_proxy import CHAT, chat, rows
from tests.support.gateway import GatewayProcess
from tests.support.otlp_receiver import OtlpReceiver

CALLER_ID = "caller-trace-0001"
PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"


def samples(gw: GatewayProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{gw.url}/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_callers_request_id_is_echoed_and_passed_on_with_the_calls_own_id(setup: Setup) -> None:
    with setup.gateway() as gw:
        mine = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers={**setup.auth, "X-Request-ID": CALLER_ID})
        forged = httpx.post(
            f"{gw.url}/v1/chat/completions", json=CHAT, headers={**setup.auth, "X-Request-ID": "bad id<script>"}
        )
        sent_mine, sent_forged = (headers for _, headers, _ in setup.provider.requests[-2:])
    assert mine.status_code == 200, mine.text
    assert mine.headers["X-Request-ID"] == CALLER_ID
    call_id = mine.headers["X-Marketplace-Request-Id"]
    assert call_id != CALLER_ID
    assert sent_mine["x-request-id"] == CALLER_ID
    assert sent_mine["x-marketplace-request-id"] == call_id  # the signed nonce stays the gateway's own
    # a header that is not a sane id is replaced, as the API does
    assert forged.headers["X-Request-ID"] != "bad id<script>" and "X-Marketplace-Request-Id" not in forged.headers
    assert re.fullmatch(r"[0-9a-f-]{36}", forged.headers["X-Request-ID"])
    assert sent_forged["x-request-id"] == forged.headers["X-Request-ID"]
    assert sorted(r.request_id for r in rows(setup, 2)) == sorted([call_id, forged.headers["X-Request-ID"]])


def test_metrics_count_calls_errors_latency_and_quota_rejections(setup: Setup) -> None:
    setup.new_consumer("quota-consumer", Plan(name="tiny", requests_per_minute=1000, requests_per_month=2))
    with setup.gateway() as gw:
        answers = [chat(gw, setup).status_code for _ in range(3)]
        anonymous = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT)
        found = samples(gw)
    assert answers == [200, 200, 429]
    assert anonymous.status_code == 401

    def value(name: str, **labels: str) -> float:
        return found.get((name, tuple(sorted(labels.items()))), 0.0)

    route = "chat.completions"
    assert value("marketplace_gateway_requests_total", route=route, status="200") == 2
    assert value("marketplace_gateway_requests_total", route=route, status="429") == 1
    assert value("marketplace_gateway_requests_total", route=route, status="401") == 1
    assert value("marketplace_gateway_errors_total", route=route, code="quota_exceeded") == 1
    assert value("marketplace_gateway_errors_total", route=route, code="unauthorized") == 1
    assert value("marketplace_gateway_quota_rejections_total", quota="requests_per_month") == 1
    assert value("marketplace_gateway_request_duration_seconds_count", route=route) == 4
    assert value("marketplace_gateway_upstream_first_byte_seconds_count", route=route) == 2
    assert value("marketplace_gateway_request_duration_seconds_bucket", route=route, le="+Inf") == 4


def test_tracing_off_by_default_sends_no_traceparent_upstream(setup: Setup) -> None:
    with setup.gateway() as gw:
        answer = httpx.post(
            f"{gw.url}/v1/chat/completions", json=CHAT, headers={**setup.auth, "traceparent": TRACEPARENT}
        )
    assert answer.status_code == 200
    _, headers, _ = setup.provider.requests[-1]
    assert "traceparent" not in headers


def test_with_an_otlp_endpoint_the_call_and_its_provider_call_are_spans_of_the_callers_trace(setup: Setup) -> None:
    with OtlpReceiver() as receiver:
        env = {"MARKETPLACE_TELEMETRY__OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        with setup.gateway(**env) as gw:
            answer = httpx.post(
                f"{gw.url}/v1/chat/completions",
                json=CHAT,
                headers={**setup.auth, "traceparent": TRACEPARENT, "X-Request-ID": CALLER_ID},
            )
            server = receiver.wait_for("gateway chat.completions")
            client = receiver.wait_for("provider call")
    assert answer.status_code == 200, answer.text
    assert len(server) == 1 and len(client) == 1, receiver.spans
    call, upstream = server[0], client[0]
    assert call.service == "marketplace-gateway"
    assert (call.trace_id, call.parent_span_id) == (PARENT_TRACE, PARENT_SPAN)
    assert call.attributes["request_id"] == CALLER_ID
    assert call.attributes["http.response.status_code"] == 200
    assert (upstream.trace_id, upstream.parent_span_id) == (PARENT_TRACE, call.span_id)
    # the provider got the trace context of the provider-call span: its own spans would join the trace
    _, headers, _ = setup.provider.requests[-1]
    assert headers["traceparent"] == f"00-{PARENT_TRACE}-{upstream.span_id}-01"


def test_a_call_without_a_traceparent_starts_a_trace(setup: Setup) -> None:
    with OtlpReceiver() as receiver:
        env = {"MARKETPLACE_TELEMETRY__OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        with setup.gateway(**env) as gw:
            assert chat(gw, setup).status_code == 200
            started = time.monotonic()
            server = receiver.wait_for("gateway chat.completions")
            client = receiver.wait_for("provider call")
    assert time.monotonic() - started < 20
    assert server[0].parent_span_id == "" and client[0].parent_span_id == server[0].span_id
    assert client[0].trace_id == server[0].trace_id


MULTIPROCESS = """
import os, sys
from prometheus_client import generate_latest
from gateway import metrics
metrics.observe("invoke", 200, 0.0, None, None)
metrics.quota_rejected("tokens_per_month")
sys.stdout.write(generate_latest(metrics.registry()).decode())
"""


def test_with_a_multiprocess_directory_every_process_is_summed(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(PROJECT_ROOT)}
    outputs = [
        subprocess.run([sys.executable, "-c", MULTIPROCESS], env=env, capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    ]
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(outputs[-1])
        for s in family.samples
    }
    assert found[("marketplace_gateway_requests_total", (("route", "invoke"), ("status", "200")))] == 2
    assert found[("marketplace_gateway_quota_rejections_total", (("quota", "tokens_per_month"),))] == 2
