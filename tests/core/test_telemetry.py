"""Tracing is off unless an OTLP endpoint is configured; configured, spans reach a real OTLP receiver.

Each case runs in a fresh interpreter: a process's tracer provider can be set only once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from core.settings import PROJECT_ROOT, TelemetrySettings
from core.telemetry import STANDARD_ENDPOINT_VARIABLES, endpoint_of, traces_url
from tests.support.otlp_receiver import OtlpReceiver

PROBE = """
import json, sys
from api.app import create_app
create_app()
import flows.publish, gateway.app
from core import telemetry
from opentelemetry import trace
with telemetry.span("probe"):
    traceparent = telemetry.current_traceparent()
headers = {}
telemetry.inject(headers)
print(json.dumps({
    "enabled": telemetry.enabled(),
    "provider": type(trace.get_tracer_provider()).__name__,
    "exporters": sorted(m for m in sys.modules if m.startswith("opentelemetry.exporter")),
    "traceparent": traceparent,
    "headers": headers,
}))
"""

EXPORT = """
from core import telemetry
from core.settings import get_settings
assert telemetry.configure_tracing(get_settings().telemetry, "probe-service")
with telemetry.span("outer", {"request_id": "r-1"}):
    with telemetry.span("inner"):
        pass
"""  # the exporter flushes when the interpreter exits


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MARKETPLACE_TELEMETRY__"))}
    return {**env, "PYTHONPATH": str(PROJECT_ROOT), **extra}


def run(code: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_off_by_default_no_provider_no_exporter_no_trace_context() -> None:
    found = json.loads(run(PROBE, clean_env()).strip().splitlines()[-1])
    assert found == {
        "enabled": False,
        "provider": "ProxyTracerProvider",  # the API's no-op: no SDK provider, no span processor
        "exporters": [],
        "traceparent": None,
        "headers": {},
    }


@pytest.mark.parametrize("variable", ["MARKETPLACE_TELEMETRY__OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"])
def test_an_endpoint_turns_tracing_on_and_spans_reach_the_receiver(variable: str) -> None:
    with OtlpReceiver() as receiver:
        run(EXPORT, clean_env(**{variable: receiver.url}))
        spans = receiver.wait_for("", count=2, timeout=5)
    by_name = {span.name: span for span in spans}
    assert set(by_name) == {"outer", "inner"}
    assert {span.service for span in spans} == {"probe-service"}
    assert by_name["inner"].parent_span_id == by_name["outer"].span_id
    assert by_name["outer"].attributes == {"request_id": "r-1"}


def test_the_endpoint_setting_wins_over_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in STANDARD_ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert endpoint_of(TelemetrySettings()) is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://standard:4318")
    assert endpoint_of(TelemetrySettings()) == "http://standard:4318"
    assert endpoint_of(TelemetrySettings(otlp_endpoint="http://ours:4318")) == "http://ours:4318"


def test_the_traces_url_of_a_base_url() -> None:
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/v1/traces") == "http://collector:4318/v1/traces"
