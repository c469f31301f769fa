"""Task retry delays follow the settings in force when a try fails, not those of the import.

Pins what `tasks/_common.RetryDelays` relies on: Prefect accepts a `list` subclass as
`retry_delay_seconds` (keeping it as given) and indexes it when a try fails.
"""

from __future__ import annotations

import time

import pytest
from prefect import flow, task
from prefect.settings import PREFECT_API_URL, temporary_settings

from core.settings import get_settings
from deployments.stack import Stack
from tasks._common import RetryDelays, backoff, jitter


@task(retries=1, retry_delay_seconds=backoff(1), retry_jitter_factor=jitter())
def fails_once(tries: list[float]) -> int:
    tries.append(time.monotonic())
    if len(tries) == 1:
        raise RuntimeError("first try fails")
    return len(tries)


def test_delays_are_read_from_the_current_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    delays = backoff(3)
    monkeypatch.setenv("MARKETPLACE_RETRIES__BASE_DELAY_SECONDS", "2")
    monkeypatch.setenv("MARKETPLACE_RETRIES__JITTER_FACTOR", "0")
    get_settings.cache_clear()
    try:
        assert (len(delays), delays[0], delays[2], delays[-1], list(delays), delays[1:]) == (
            3,
            2.0,
            8.0,
            8.0,
            [2.0, 4.0, 8.0],
            [4.0, 8.0],
        )
        monkeypatch.setenv("MARKETPLACE_RETRIES__JITTER_FACTOR", "0.5")
        get_settings.cache_clear()
        spread = {delays[0] for _ in range(50)}
        assert len(spread) > 1 and all(0 <= d <= 3.0 for d in spread), "jitter spreads each read, within 1 + factor"
    finally:
        get_settings.cache_clear()


def test_prefect_keeps_the_list_it_is_given() -> None:
    """Prefect checks the type (a list) when the decorator runs, and keeps the object: no copy."""
    assert isinstance(fails_once.retry_delay_seconds, RetryDelays)
    assert fails_once.retry_jitter_factor == 0, "the delays spread themselves"
    assert isinstance(fails_once.with_options(retries=1).retry_delay_seconds, RetryDelays)


def test_a_retry_waits_the_delay_configured_after_import(
    prefect_server: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task was decorated with the suite's 0.05 s; the first retry waits the 1 s set afterwards."""
    monkeypatch.setenv("MARKETPLACE_RETRIES__BASE_DELAY_SECONDS", "1")
    monkeypatch.setenv("MARKETPLACE_RETRIES__JITTER_FACTOR", "0")
    get_settings.cache_clear()

    @flow
    def retried() -> list[float]:
        tries: list[float] = []
        fails_once(tries)
        return tries

    try:
        with temporary_settings({PREFECT_API_URL: prefect_server.config.prefect_api_url}):
            tries = retried()
    finally:
        get_settings.cache_clear()
    assert len(tries) == 2
    assert 1.0 <= tries[1] - tries[0] < 5.0, f"waited {tries[1] - tries[0]:.2f} s"
