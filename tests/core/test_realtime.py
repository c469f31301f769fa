"""The API's threads at real-time priority: all of them, those started later too, never a forked process."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from core import realtime
from core.realtime import make_process_realtime
from core.settings import PROJECT_ROOT

# In a fresh interpreter: the policy would otherwise stay with pytest's own threads.
MAKES_ITSELF_REALTIME = """
import json, os, threading
from core.realtime import make_process_realtime, policy_of

policies = {}
started = threading.Event()
stop = threading.Event()

def earlier():
    started.set()
    stop.wait()

before = threading.Thread(target=earlier)
before.start()
started.wait()
policies["made"] = make_process_realtime()
policies["main"] = policy_of(threading.get_native_id())
policies["started before"] = policy_of(before.native_id)

def later():
    policies["started after"] = policy_of(threading.get_native_id())

after = threading.Thread(target=later)
after.start()
after.join()
stop.set()
before.join()
pid = os.fork()
if pid == 0:
    os.write(1, json.dumps({"forked": policy_of(0)}).encode() + b"\\n")
    os._exit(0)
os.waitpid(pid, 0)
print(json.dumps(policies))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="SCHED_RR needs root or CAP_SYS_NICE (the CI machine runs as root)")
def test_every_thread_runs_real_time_but_a_forked_process_does_not() -> None:
    done = subprocess.run(
        [sys.executable, "-c", MAKES_ITSELF_REALTIME], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert {"forked": os.SCHED_OTHER} in lines
    assert lines[-1] == {
        "made": True,
        "main": os.SCHED_RR,
        "started before": os.SCHED_RR,  # they share the GIL: a normal one holding it would hold up the rest
        "started after": os.SCHED_RR,
    }


def test_without_permission_the_process_keeps_the_normal_policy_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refused(*_: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(realtime.os, "sched_setscheduler", refused)
    with caplog.at_level(logging.INFO, logger="marketplace.realtime"):
        assert make_process_realtime() is False
    assert realtime.policy_of(0) == os.SCHED_OTHER
    assert "needs root or CAP_SYS_NICE" in caplog.text
