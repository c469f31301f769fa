"""Timing a check: its outcome carries how long it took, and the caller learns when it started."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from core.domain import PhaseOutcome


def timed(check: Callable[[], PhaseOutcome]) -> tuple[PhaseOutcome, datetime]:
    """Run a check; the outcome carries its duration, returned with the moment it started."""
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    outcome = check()
    outcome.duration_ms = (time.perf_counter() - t0) * 1000
    return outcome, started_at
