"""GET /metrics: Prometheus text with the seed's metric names, HTTP counters by route template,
and publishing counters derived from the rows the flows write (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api import metrics
from api.app import create_app
from core.domain import Issue, Outcome, Phase, PhaseOutcome, ServiceStatus, Severity
from storage.database import reset_engine, session_scope
from storage.repositories import metrics as metrics_repo
from storage.repositories import outbox, phases, services, versions, webhooks
from storage.repositories.services import SYSTEM, Actor
from tests.support.specs import make_spec

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
SEED_METRICS = {
    # 003 (publishing pipeline) §8.2
    "publishing_requests",
    "publishing_duration_seconds",
    "validation_errors",
    "policy_violations",
    "integration_failures",
    # 000 (marketplace) §9: request rate and latency
    "marketplace_requests",
    "marketplace_request_duration_seconds",
}


@pytest.fixture
def app_client(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app on a fresh database; /metrics needs no Prefect server, and no token."""
    monkeypatch.setattr(metrics.PUBLISHING, "cache_seconds", 0.0)
    metrics.PUBLISHING.clear()
    reset_engine()
    with TestClient(create_app()) as client:
        yield client
    reset_engine()
    metrics.PUBLISHING.clear()


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_is_prometheus_text_with_the_seed_names_and_no_token(app_client: TestClient) -> None:
    response = app_client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {family.name: family.type for family in text_string_to_metric_families(response.text)}
    assert families.keys() >= SEED_METRICS
    assert families["publishing_duration_seconds"] == "histogram"
    assert families["marketplace_request_duration_seconds"] == "histogram"
    assert families["validation_errors"] == families["policy_violations"] == "counter"
    assert value(scrape(app_client), "marketplace_metrics_database_up") == 1
    assert "/metrics" not in app_client.get("/openapi.json").json()["paths"]


def test_openmetrics_when_the_scraper_asks_for_it(app_client: TestClient) -> None:
    response = app_client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_request_counters_use_route_templates_never_raw_paths(app_client: TestClient) -> None:
    route = "/api/v1/services/{service_id}"
    ids = [str(uuid.uuid4()) for _ in range(2)]
    statuses = [app_client.get(f"/api/v1/services/{service_id}").status_code for service_id in ids]
    assert statuses[0] == statuses[1]
    status = str(statuses[0])
    before = scrape(app_client)
    for service_id in ids:
        app_client.get(f"/api/v1/services/{service_id}")
    for path in ("/no/such/path", f"/no/such/{uuid.uuid4()}"):
        assert app_client.get(path).status_code == 404
    after = scrape(app_client)

    labels = {"method": "GET", "route": route, "status": status}
    total = "marketplace_requests_total"
    assert value(after, total, **labels) == value(before, total, **labels) + 2
    duration = {"method": "GET", "route": route}
    count = "marketplace_request_duration_seconds_count"
    assert value(after, count, **duration) == value(before, count, **duration) + 2
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(after, "marketplace_requests_total", **unmatched) >= 2
    text = app_client.get("/metrics").text
    assert not any(service_id in text for service_id in ids)
    assert "/no/such" not in text


def new_version(name: str) -> tuple[str, str]:
    with session_scope() as session:
        service = services.create_submitted(session, make_spec(name=name), Actor("acme", "provider"))
        return service.id, versions.latest(session, service.id).id


def record(service_id: str, outcome: PhaseOutcome) -> None:
    with session_scope() as session:
        phases.record(session, service_id, None, outcome, datetime.now(UTC))


def fail(version_id: str, phase: Phase, reason: str) -> None:
    with session_scope() as session:
        versions.transition(
            session, version_id, ServiceStatus.FAILED, actor=SYSTEM, reason=reason, failure_phase=phase.value
        )


def issue(code: str, severity: Severity = Severity.HIGH) -> Issue:
    return Issue(code=code, message=f"{code} is wrong", severity=severity)


def test_publishing_counters_follow_the_rows_the_flows_wrote(app_client: TestClient) -> None:
    empty = scrape(app_client)
    assert value(empty, "publishing_requests_total", status="received") == 0

    published_id, published_version = new_version("acme-good")
    record(published_id, PhaseOutcome(phase=Phase.METADATA_VALIDATION, outcome=Outcome.PASSED, duration_ms=4))
    with session_scope() as session:
        for target in (ServiceStatus.VALIDATING, ServiceStatus.TESTING, ServiceStatus.ACTIVE):
            versions.transition(session, published_version, target, actor=SYSTEM, reason="ok")

    invalid_id, invalid_version = new_version("acme-invalid")
    errors = [issue("semver"), issue("pricing"), issue("semver")]
    outcome = PhaseOutcome.from_issues(Phase.METADATA_VALIDATION, errors)
    record(invalid_id, outcome.model_copy(update={"duration_ms": 2500.0}))
    fail(invalid_version, Phase.METADATA_VALIDATION, "metadata_validation failed")

    policy_id, _ = new_version("acme-policy")
    findings = [issue("https-required", Severity.CRITICAL), issue("sla-latency-ceiling", Severity.LOW)]
    record(policy_id, PhaseOutcome.from_issues(Phase.POLICY_COMPLIANCE, findings))

    _, registry_version = new_version("acme-registry")
    fail(registry_version, Phase.REGISTRY_SYNC, "pipeline error: HTTPStatusError: 503 from the registry")
    _, opa_version = new_version("acme-opa")
    fail(opa_version, Phase.POLICY_COMPLIANCE, "pipeline error: PolicyEvaluationError: OPA unreachable")

    endpoint_id, _ = new_version("acme-endpoint")
    unreachable = PhaseOutcome.from_issues(Phase.ENDPOINT_TESTS, [issue("endpoint-unreachable")], check="health")
    record(endpoint_id, unreachable)

    with session_scope() as session:
        event = outbox.add(session, aggregate_id=published_id, event_type="service_published", data={})
        session.flush()
        outbox.record_failures(session, {event.id: "broker down"}, max_attempts=1, backoff=outbox.Backoff(1, 10))
        new_event = webhooks.NewEvent(str(uuid.uuid4()), "service_published", published_id, "governance", {})
        [delivery] = webhooks.create_deliveries(session, new_event, ["https://governance.example/hook"])
        webhooks.record_attempt(session, delivery.id, status_code=503, error=None, duration_ms=3)
        webhooks.record_attempt(session, delivery.id, status_code=None, error="connection refused", duration_ms=1)
        webhooks.record_attempt(session, delivery.id, status_code=204, error=None, duration_ms=2)

    s = scrape(app_client)
    assert value(s, "publishing_requests_total", status="received") == 6
    assert value(s, "publishing_requests_total", status="published") == 1
    assert value(s, "publishing_requests_total", status="failed") == 3
    assert value(s, "publishing_in_progress", status="submitted") == 2
    assert value(s, "publishing_duration_seconds_count") == 1
    assert value(s, "publishing_duration_seconds_bucket", le="+Inf") == 1

    assert value(s, "validation_errors_total", phase="metadata_validation", type="semver") == 2
    assert value(s, "validation_errors_total", phase="metadata_validation", type="pricing") == 1
    assert value(s, "policy_violations_total", policy="https-required", severity="critical") == 1
    assert value(s, "policy_violations_total", policy="sla-latency-ceiling", severity="low") == 1
    assert value(s, "integration_failures_total", system="registry") == 1
    assert value(s, "integration_failures_total", system="policy_engine") == 1
    assert value(s, "integration_failures_total", system="provider_endpoint") == 1
    assert value(s, "integration_failures_total", system="kafka") == 1
    assert value(s, "integration_failures_total", system="webhook") == 2

    phase = {"phase": "metadata_validation"}
    assert value(s, "publishing_phase_results_total", outcome="failed", **phase) == 1
    assert value(s, "publishing_phase_results_total", outcome="passed", **phase) == 1
    assert value(s, "publishing_phase_duration_seconds_count", **phase) == 2
    assert value(s, "publishing_phase_duration_seconds_bucket", le="1.0", **phase) == 1  # 4 ms, not 2.5 s
    assert value(s, "publishing_phase_duration_seconds_bucket", le="2.5", **phase) == 2
    assert value(s, "publishing_phase_duration_seconds_sum", **phase) == pytest.approx(2.504)
    assert value(s, "marketplace_services", status="active") == 1
    assert value(s, "marketplace_outbox_events", status="dead") == 1


def test_database_reads_are_cached_between_scrapes(app_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics.PUBLISHING, "cache_seconds", 300.0)
    assert value(scrape(app_client), "publishing_requests_total", status="received") == 0
    new_version("acme-cached")
    assert value(scrape(app_client), "publishing_requests_total", status="received") == 0
    metrics.PUBLISHING.clear()
    assert value(scrape(app_client), "publishing_requests_total", status="received") == 1


def test_distinct_label_values_are_capped(database_url: str) -> None:
    service_id, _ = new_version("acme-many-codes")
    errors = [issue("semver")] * 3 + [issue("pricing")] * 2 + [issue("size")]
    record(service_id, PhaseOutcome.from_issues(Phase.METADATA_VALIDATION, errors))
    limits = metrics_repo.SnapshotLimits(phase_buckets=(1.0,), publish_buckets=(1.0,), max_label_values=2)
    with session_scope() as session:
        snap = metrics_repo.snapshot(session, limits)
    assert snap.validation_errors == {("metadata_validation", "semver"): 3, ("other", "other"): 3}


def test_an_unreachable_database_still_answers_with_the_http_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    port_nobody_listens_on = 1
    monkeypatch.setenv("MARKETPLACE_DATABASE__URL", f"postgresql+psycopg://root@127.0.0.1:{port_nobody_listens_on}/x")
    monkeypatch.setattr(metrics.PUBLISHING, "cache_seconds", 0.0)
    reset_engine()
    try:
        with TestClient(create_app()) as client:
            client.get("/health")
            s = scrape(client)
    finally:
        reset_engine()
        metrics.PUBLISHING.clear()
    assert value(s, "marketplace_metrics_database_up") == 0
    assert value(s, "marketplace_requests_total", method="GET", route="/health", status="200") >= 1
    assert not any(name.startswith("publishing_") for name, _ in s)
