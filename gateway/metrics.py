"""The gateway's Prometheus metrics at GET /metrics: calls, their latency, errors and quota refusals.

Counted on the hot path at the end of each call: a counter and one or two histogram observations,
no I/O (about 3 µs of CPU a call against the ~340 µs the call costs; bench/tracing_overhead.py
measures the gateway before and after).
Label values are bounded: route names and status codes the gateway itself produces, our error
codes, the two quota names. With several gateway processes on one port (`MARKETPLACE_GATEWAY__WORKERS`)
a scrape reaches one of them: set PROMETHEUS_MULTIPROC_DIR to an empty directory shared by them
and every process writes its values there, summed at each scrape (prometheus_client's multiprocess mode).

/metrics, like the API's, is for a scraper on the internal network: keep it off the public ingress.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder

from gateway.asgi import Scope, Send, header, send_whole

REGISTRY = CollectorRegistry(auto_describe=True)
# Gateway time matters in milliseconds; a provider's answer may take seconds (streams: minutes).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)

CALLS = Counter(
    "marketplace_gateway_requests",
    "Calls answered by the gateway, by route (invoke, chat.completions, completions, embeddings, models) and status.",
    ("route", "status"),
    registry=REGISTRY,
)
DURATION = Histogram(
    "marketplace_gateway_request_duration_seconds",
    "From a call's arrival to its last byte (the provider's time included), by route.",
    ("route",),
    buckets=BUCKETS,
    registry=REGISTRY,
)
UPSTREAM_FIRST_BYTE = Histogram(
    "marketplace_gateway_upstream_first_byte_seconds",
    "From a call's arrival to the provider's status line: the gateway's checks plus the provider's first byte.",
    ("route",),
    buckets=BUCKETS,
    registry=REGISTRY,
)
ERRORS = Counter(
    "marketplace_gateway_errors",
    "Calls answered with an error, by route and error code (unauthorized, rate_limited, quota_exceeded, "
    "upstream_timeout, upstream_error, ...).",
    ("route", "code"),
    registry=REGISTRY,
)
QUOTA_REJECTIONS = Counter(
    "marketplace_gateway_quota_rejections",
    "Calls refused because a monthly quota was used up, by quota (requests or tokens).",
    ("quota",),
    registry=REGISTRY,
)


# The labelled children by their label values: `.labels()` takes a lock and builds a key each time.
_calls: dict[tuple[str, int], Any] = {}
_durations: dict[str, tuple[Any, Any]] = {}


def observe(route: str, status: int, started: float, ttfb_ms: float | None, error: str | None) -> None:
    """Count one answered call."""
    calls = _calls.get((route, status))
    if calls is None:
        calls = _calls[route, status] = CALLS.labels(route, str(status))
    calls.inc()
    durations = _durations.get(route)
    if durations is None:
        durations = _durations[route] = (DURATION.labels(route), UPSTREAM_FIRST_BYTE.labels(route))
    durations[0].observe(time.perf_counter() - started)
    if ttfb_ms is not None:
        durations[1].observe(ttfb_ms / 1000)
    if error is not None:
        ERRORS.labels(route, error).inc()


def quota_rejected(quota: str) -> None:
    QUOTA_REJECTIONS.labels(quota).inc()


def registry() -> CollectorRegistry:
    """This process's registry, or every process's values in multiprocess mode."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    from prometheus_client import multiprocess

    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
    return combined


async def serve(scope: Scope, send: Send) -> None:
    """GET /metrics: text exposition, or OpenMetrics when the scraper asks."""
    accept = header(scope, b"accept") or b""
    encoder, content_type = choose_encoder(accept.decode("latin-1"))
    body = encoder(registry())
    await send_whole(send, 200, body, {}, content_type.encode("latin-1"))
