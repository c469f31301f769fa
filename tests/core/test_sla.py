"""The SLA verdict of one check: probes and traffic against the spec's promise."""

from __future__ import annotations

from core.sla import Probes, Promise, Traffic, judge

PROMISE = Promise(availability=99.0, max_latency_ms=500)
UP = Probes(health_ok=True, health_ms=12.0, call_ok=True, call_ms=40.0)
DOWN = Probes(health_ok=False, health_ms=None, call_ok=False, call_ms=None)


def test_the_promise_is_read_from_the_spec_and_tolerates_a_bad_one() -> None:
    assert Promise.of({"sla": {"availability": 99.9, "maxLatencyMs": 2000}}) == Promise(99.9, 2000)
    assert Promise.of({"sla": "fast"}) == Promise(None, None)
    assert Promise.of({}) == Promise(None, None)


def test_a_quiet_healthy_service_is_judged_by_its_probes() -> None:
    verdict = judge(PROMISE, UP, Traffic())
    assert (verdict.successes, verdict.attempts, verdict.availability) == (2, 2, 100.0)
    assert verdict.latency_p95_ms == 40.0, "nearest rank of two samples: the slower"
    assert not verdict.breached and verdict.reasons == []


def test_a_quiet_service_that_fails_its_probes_breaches_through_availability() -> None:
    verdict = judge(PROMISE, DOWN, Traffic())
    assert verdict.availability == 0.0 and verdict.latency_p95_ms is None
    assert verdict.breached
    assert verdict.reasons == ["availability 0% below the promised 99%"]


def test_busy_traffic_outweighs_a_broken_health_page() -> None:
    probes = Probes(health_ok=False, health_ms=None, call_ok=True, call_ms=30.0)
    verdict = judge(PROMISE, probes, Traffic(requests=998, errors=0, latency_p95_ms=120.0))
    assert verdict.availability == round(100 * 999 / 1000, 3)
    assert not verdict.breached, "consumers are served: one failed probe is not an SLA breach"


def test_traffic_errors_and_slow_calls_breach() -> None:
    errors = judge(PROMISE, UP, Traffic(requests=98, errors=5, latency_p95_ms=100.0))
    assert errors.breached and errors.availability == 95.0
    slow = judge(PROMISE, UP, Traffic(requests=100, errors=0, latency_p95_ms=750.4))
    assert slow.breached and slow.reasons == ["p95 latency 750 ms above the promised 500 ms"]
    assert slow.latency_p95_ms == 750.4, "the traffic's p95, not the probes', when there was traffic"


def test_without_a_credential_the_health_probe_alone_speaks() -> None:
    probes = Probes(health_ok=True, health_ms=8.0, call_ok=None, call_ms=None)
    verdict = judge(PROMISE, probes, Traffic())
    assert (verdict.successes, verdict.attempts, verdict.breached) == (1, 1, False)


def test_nothing_promised_is_never_breached() -> None:
    assert not judge(Promise(None, None), DOWN, Traffic(requests=10, errors=10)).breached
