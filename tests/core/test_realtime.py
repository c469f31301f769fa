"""The real-time policy goes to the calling thread only, never to the threads it starts."""

from __future__ import annotations

import logging
import os
import threading

import pytest

from core import realtime
from core.realtime import make_this_thread_realtime, policy_of


def on_a_thread_of_its_own() -> dict[str, int | bool]:
    """Make a new thread real-time; what it, a thread it starts and the test's thread then run under."""
    seen: dict[str, int | bool] = {}

    def child() -> None:
        seen["child"] = policy_of(threading.get_native_id())

    def loop_thread() -> None:
        seen["made"] = make_this_thread_realtime()
        seen["itself"] = policy_of(threading.get_native_id())
        started = threading.Thread(target=child)
        started.start()
        started.join()

    thread = threading.Thread(target=loop_thread)
    thread.start()
    thread.join()
    seen["caller"] = policy_of(threading.get_native_id())
    return seen


@pytest.mark.skipif(os.geteuid() != 0, reason="SCHED_RR needs root or CAP_SYS_NICE (the CI machine runs as root)")
def test_only_the_calling_thread_becomes_real_time() -> None:
    assert on_a_thread_of_its_own() == {
        "made": True,
        "itself": os.SCHED_RR,
        "child": os.SCHED_OTHER,  # the thread pool's CPU-heavy work stays at the normal policy
        "caller": os.SCHED_OTHER,  # the rest of the process too
    }


def test_without_permission_the_thread_keeps_the_normal_policy_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refused(*_: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(realtime.os, "sched_setscheduler", refused)
    with caplog.at_level(logging.INFO, logger="marketplace.realtime"):
        seen = on_a_thread_of_its_own()
    assert seen["made"] is False
    assert seen["itself"] == os.SCHED_OTHER
    assert "needs root or CAP_SYS_NICE" in caplog.text
