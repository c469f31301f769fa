"""Traces: OpenTelemetry spans exported over OTLP/HTTP when an endpoint is configured; off by default.

One trace follows a publication across processes: the API request's span, then (through the
traceparent stored with the owed run and given to Prefect as the run label its run telemetry
reads) the flow run's and task runs' spans that Prefect itself records, then the provider calls
as child spans. The gateway's calls get a span each, with the provider call as a child, and the
traceparent goes on to the provider.

Off (no endpoint): no SDK is loaded, no exporter exists, `enabled()` is False and every helper
here returns at its first line; the gateway's hot path pays one boolean test per call.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace.export import SpanExporter

    from core.settings import TelemetrySettings

log = logging.getLogger("marketplace.telemetry")

TRACER_NAME = "marketplace"
TRACEPARENT = "traceparent"
STANDARD_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


class _State:
    enabled = False  # read on every gateway call: a plain attribute, no function call when off


STATE = _State()


def enabled() -> bool:
    """Whether this process records spans (an exporter was configured)."""
    return STATE.enabled


def endpoint_of(settings: TelemetrySettings) -> str | None:
    """The configured OTLP endpoint: ours, else the standard OpenTelemetry variables."""
    if settings.otlp_endpoint:
        return settings.otlp_endpoint
    return next((os.environ[name] for name in STANDARD_ENDPOINT_VARIABLES if os.environ.get(name)), None)


def configure_tracing(settings: TelemetrySettings, service_name: str) -> bool:
    """Install the OTLP exporter for this process when an endpoint is configured; True if tracing is on.
    Once per process (the global tracer provider can be set only once): later calls change nothing."""
    if STATE.enabled:
        return True
    endpoint = endpoint_of(settings)
    if endpoint is None:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if settings.otlp_endpoint:
        exporter: SpanExporter = OTLPSpanExporter(endpoint=traces_url(settings.otlp_endpoint))
    else:
        exporter = OTLPSpanExporter()  # reads the OTEL_EXPORTER_OTLP_* variables itself
    install(BatchSpanProcessor(exporter), service_name, settings.sample_ratio)
    log.info("tracing on: spans of %s exported to %s", service_name, endpoint)
    return True


def traces_url(base: str) -> str:
    """The OTLP/HTTP traces URL of a receiver's base URL (kept as given when it already names the path)."""
    base = base.rstrip("/")
    return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


def install(processor: SpanProcessor, service_name: str, sample_ratio: float = 1.0) -> None:
    """Make `processor` receive this process's spans (an OTLP batch exporter; tests: an in-memory one)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    current = trace.get_tracer_provider()
    if hasattr(current, "add_span_processor"):  # an SDK provider is in place already (set once per process)
        current.add_span_processor(processor)
    else:
        provider = TracerProvider(
            resource=Resource.create({"service.name": service_name}),
            sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
        )
        provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)
    STATE.enabled = True


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def current_traceparent() -> str | None:
    """The W3C traceparent of the span running now (None when tracing is off or no span runs)."""
    if not STATE.enabled:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT)


def inject(headers: dict[str, str]) -> None:
    """Add the current span's traceparent (and tracestate) to outgoing headers, when tracing is on."""
    if STATE.enabled:
        propagate.inject(headers)


def extract(headers: Mapping[str, str]) -> otel_context.Context:
    """The trace context a caller sent (traceparent header), to continue its trace."""
    return propagate.extract(headers)


@contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None, kind: trace.SpanKind | None = None) -> Iterator[None]:
    """A child span of the current one around the block (nothing at all when tracing is off)."""
    if not STATE.enabled:
        yield
        return
    with tracer().start_as_current_span(name, kind=kind or trace.SpanKind.INTERNAL, attributes=attributes):
        yield


def configure_from_settings(service_name: str) -> bool:
    """`configure_tracing` with the process's settings (the worker's flow modules call this on import)."""
    if not (
        os.environ.get("MARKETPLACE_TELEMETRY__OTLP_ENDPOINT") or any(map(os.environ.get, STANDARD_ENDPOINT_VARIABLES))
    ):
        return False  # off: not even the settings are read
    from core.settings import get_settings

    return configure_tracing(get_settings().telemetry, service_name)
