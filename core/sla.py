"""The SLA verdict of one health check: probes and the gateway's real traffic against the promise.

Pure arithmetic, no I/O: the monitor's record task (tasks/health.py) gathers the inputs, this
module decides. A service's spec promises `sla.availability` (percent) and `sla.maxLatencyMs`
(p95); a check observes

- availability: the share of attempts that succeeded, where the attempts are the probes
  (health endpoint, authenticated minimal call when a credential is stored) and every gateway call of the window that
  reached the provider (calls the gateway refused on its own — limits, quotas, a suspended
  service — say nothing about the provider and are not counted);
- latency: the p95 of the window's successful gateway calls (time to first byte for streams,
  whose length is the model's, not the provider's delay) together with the probes' times.

A check with traffic weighs each call as much as a probe, so a busy service is judged mostly by
what its consumers saw, a quiet one by the probes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Promise:
    """What the spec's `sla` section promises (None: nothing promised of that kind)."""

    availability: float | None
    max_latency_ms: int | None

    @classmethod
    def of(cls, spec: dict[str, Any]) -> Promise:
        found = spec.get("sla")
        sla: dict[str, Any] = found if isinstance(found, dict) else {}
        availability = sla.get("availability")
        latency = sla.get("maxLatencyMs")
        return cls(
            float(availability) if isinstance(availability, int | float) else None,
            int(latency) if isinstance(latency, int | float) else None,
        )


@dataclass(frozen=True)
class Traffic:
    """The gateway's calls to the service in the check's window."""

    requests: int = 0  # calls that reached (or tried to reach) the provider
    errors: int = 0  # of which failed: 5xx answers, broken off, timed out, refused by the breaker
    latency_p95_ms: float | None = None  # of the successful ones


@dataclass(frozen=True)
class Probes:
    health_ok: bool
    health_ms: float | None
    call_ok: bool | None  # None: not made (no credential stored yet)
    call_ms: float | None


@dataclass(frozen=True)
class Verdict:
    successes: int
    attempts: int
    availability: float  # percent
    latency_p95_ms: float | None
    breached: bool
    reasons: list[str] = field(default_factory=list)


def judge(promise: Promise, probes: Probes, traffic: Traffic) -> Verdict:
    """Availability and latency of the check, and whether they break the promise (with why)."""
    successes = int(probes.health_ok) + int(bool(probes.call_ok)) + traffic.requests - traffic.errors
    attempts = 1 + int(probes.call_ok is not None) + traffic.requests
    availability = round(100.0 * successes / attempts, 3)
    latency = _worst_p95(probes, traffic)
    reasons = []
    if promise.availability is not None and availability < promise.availability:
        reasons.append(f"availability {availability:g}% below the promised {promise.availability:g}%")
    if promise.max_latency_ms is not None and latency is not None and latency > promise.max_latency_ms:
        reasons.append(f"p95 latency {latency:.0f} ms above the promised {promise.max_latency_ms} ms")
    # A failed probe counts through the availability it lowers, not on its own: a service whose
    # consumers are served well is not suspended for a broken health page.
    breached = bool(reasons)
    return Verdict(successes, attempts, availability, latency, breached, reasons)


def _worst_p95(probes: Probes, traffic: Traffic) -> float | None:
    """The traffic's p95 when there was traffic, else the probes' (nearest rank: the slower one)."""
    if traffic.latency_p95_ms is not None:
        return round(traffic.latency_p95_ms, 1)
    samples = sorted(
        ms
        for ok, ms in ((probes.health_ok, probes.health_ms), (bool(probes.call_ok), probes.call_ms))
        if ok and ms is not None
    )
    if not samples:
        return None
    return round(samples[max(1, math.ceil(0.95 * len(samples))) - 1], 1)
