"""Prometheus metrics at GET /metrics (text exposition format).

Two sources:

- HTTP metrics, counted in this process by the request middleware (api/middleware.py):
  requests by method, route template and status, and a duration histogram.
- Publishing metrics, read from the database at scrape time (PublishingCollector): the pipeline
  runs in Prefect worker processes, so its outcomes are the rows the flows wrote. The reading is
  cached for a few seconds and only one scrape at a time computes it.

/metrics is unauthenticated by design: it is for a Prometheus scraper on the internal network
and must not be routed from the public ingress. Label values are bounded (route templates,
never raw paths; capped sets of codes), so a client cannot grow the series count.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from core.settings import get_settings
from storage.database import session_scope
from storage.repositories import metrics as metrics_repo

log = logging.getLogger("marketplace.metrics")

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series (half the series, unused)
REGISTRY = CollectorRegistry(auto_describe=True)
for _default in (ProcessCollector, PlatformCollector, GCCollector):
    _default(registry=REGISTRY)

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PHASE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# Submission to active: seconds without approval, up to the 7-day approval timeout with it.
PUBLISH_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0, 604800.0)

REQUESTS = Counter(
    "marketplace_requests",
    "HTTP requests answered, by method, route template and status code.",
    ("method", "route", "status"),
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "marketplace_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by method and route template.",
    ("method", "route"),
    buckets=HTTP_BUCKETS,
    registry=REGISTRY,
)
IN_PROGRESS = Gauge("marketplace_requests_in_progress", "HTTP requests being handled now.", registry=REGISTRY)


@dataclass
class _Cached:
    database_url: str
    taken_at: float
    snapshot: metrics_repo.PublishingSnapshot | None
    duration: float


class PublishingCollector(Collector):
    """The seed's publishing metrics, from what the flow runs recorded in the database."""

    def __init__(self, cache_seconds: float = 10.0) -> None:
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: _Cached | None = None

    def describe(self) -> list[Metric]:
        return []  # not read at registration: the database is only queried when scraped

    def collect(self) -> Iterator[Metric]:
        cached = self._read()
        yield GaugeMetricFamily(
            "marketplace_metrics_database_up",
            "1 if the last read of the publishing metrics from the database succeeded.",
            value=1 if cached.snapshot is not None else 0,
        )
        yield GaugeMetricFamily(
            "marketplace_metrics_database_read_seconds",
            "How long the last read of the publishing metrics took.",
            value=cached.duration,
        )
        if cached.snapshot is not None:
            yield from _families(cached.snapshot)

    def clear(self) -> None:
        """Forget the cached reading (the next scrape queries the database)."""
        with self._lock:
            self._cached = None

    def _read(self) -> _Cached:
        url = get_settings().database.url
        with self._lock:  # one scrape queries, concurrent ones wait and share its result
            cached = self._cached
            fresh = cached and cached.database_url == url and time.monotonic() - cached.taken_at < self.cache_seconds
            if cached is None or not fresh:
                cached = self._cached = self._query(url)
            return cached

    def _query(self, url: str) -> _Cached:
        started = time.monotonic()
        limits = metrics_repo.SnapshotLimits(phase_buckets=PHASE_BUCKETS, publish_buckets=PUBLISH_BUCKETS)
        try:
            with session_scope() as session:
                snapshot: metrics_repo.PublishingSnapshot | None = metrics_repo.snapshot(session, limits)
        except Exception:
            log.exception("reading the publishing metrics from the database failed")
            snapshot = None
        return _Cached(url, time.monotonic(), snapshot, time.monotonic() - started)


def _families(snap: metrics_repo.PublishingSnapshot) -> Iterator[Metric]:
    yield from _publishing(snap)
    errors = CounterMetricFamily(
        "validation_errors",
        "Blocking findings of the validation phases (metadata, OpenAPI), by phase and type (issue code).",
        labels=("phase", "type"),
    )
    for (phase, code), count in sorted(snap.validation_errors.items()):
        errors.add_metric((phase, code), count)
    yield errors
    violations = CounterMetricFamily(
        "policy_violations",
        "Policy violations found by the policy phase, by policy id and severity (critical/high block).",
        labels=("policy", "severity"),
    )
    for (policy, severity), count in sorted(snap.policy_violations.items()):
        violations.add_metric((policy, severity), count)
    yield violations
    failures = CounterMetricFamily(
        "integration_failures",
        "Failures of external systems: registry and policy_engine (publications failed by them), "
        "provider_endpoint (failed endpoint test attempts), kafka (dead outbox events), webhook (failed attempts).",
        labels=("system",),
    )
    for system, count in sorted(snap.integration_failures.items()):
        failures.add_metric((system,), count)
    yield failures
    yield _by_status("marketplace_services", "Services by lifecycle status.", snap.services_by_status)
    yield _by_status("marketplace_outbox_events", "Outbox events by delivery status.", snap.outbox_by_status)
    yield GaugeMetricFamily(
        "marketplace_flow_runs_queued",
        "Flow runs owed by accepted requests and not created in Prefect yet (Prefect busy or down).",
        value=snap.run_starts.queued,
    )
    oldest = snap.run_starts.oldest
    yield GaugeMetricFamily(
        "marketplace_flow_runs_queued_oldest_seconds",
        "How long the oldest owed flow run has waited to be created in Prefect (0: none waits).",
        value=max(0.0, time.time() - oldest.timestamp()) if oldest else 0.0,
    )


def _publishing(snap: metrics_repo.PublishingSnapshot) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "publishing_requests",
        "Publication requests (versions submitted): status received (all), published (reached active), failed.",
        labels=("status",),
    )
    requests.add_metric(("received",), sum(snap.versions_by_status.values()))
    requests.add_metric(("published",), snap.published)
    requests.add_metric(("failed",), snap.versions_by_status.get("failed", 0))
    yield requests
    pipeline = ("submitted", "validating", "testing", "pending_approval")
    yield _by_status(
        "publishing_in_progress",
        "Versions in the pipeline now, by status.",
        {status: snap.versions_by_status.get(status, 0) for status in pipeline},
    )
    duration = HistogramMetricFamily(
        "publishing_duration_seconds", "Submission to active, of published versions (includes approval waits)."
    )
    duration.add_metric([], _buckets(snap.publish_duration, PUBLISH_BUCKETS), snap.publish_duration.total)
    yield duration
    phase_duration = HistogramMetricFamily(
        "publishing_phase_duration_seconds",
        "Duration of each recorded phase (or check) outcome.",
        labels=("phase",),
    )
    outcomes = CounterMetricFamily(
        "publishing_phase_results",
        "Recorded phase (or check) outcomes, by phase and outcome.",
        labels=("phase", "outcome"),
    )
    per_phase: dict[str, metrics_repo.Histogram] = {}
    for (phase, outcome), hist in sorted(snap.phases.items()):
        outcomes.add_metric((phase, outcome), hist.count)
        per_phase.setdefault(phase, metrics_repo.Histogram([0] * len(PHASE_BUCKETS))).add(hist)
    for phase, hist in per_phase.items():
        phase_duration.add_metric((phase,), _buckets(hist, PHASE_BUCKETS), hist.total)
    yield phase_duration
    yield outcomes


def _buckets(hist: metrics_repo.Histogram, bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    pairs = [(str(bound), float(count)) for bound, count in zip(bounds, hist.buckets, strict=True)]
    return [*pairs, ("+Inf", float(hist.count))]


def _by_status(name: str, documentation: str, counts: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=("status",))
    for status, count in sorted(counts.items()):
        family.add_metric((status,), count)
    return family


PUBLISHING = PublishingCollector()
REGISTRY.register(PUBLISHING)

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """Prometheus text exposition, or OpenMetrics when the scraper asks (internal network only)."""
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(REGISTRY), headers={"Content-Type": content_type})
