"""A latency-critical process ahead of batch work on a shared host: the SCHED_RR real-time policy.

Measured on 2 cores with the whole platform on them (bench/status_load.py): while 20 publishes
ran, status reads waited 20-120 ms before the API's event loop even looked at them, although
the API needed a fraction of one core. The loop thread was runnable but not running: the Linux
scheduler gives a waking thread a core only when it has earned it against the other runnable
threads, and nice values (the API at 0, Prefect and the workers niced) change shares, not how
soon a thread that wakes up runs. A real-time thread runs as soon as it is runnable, ahead of
every normal thread.

Every thread of the process, not the event loop's alone: they share the GIL. With the loop
thread alone real-time, a normal thread of the API holding the GIL (a status load, the run-state
poller) and then preempted by batch work held the loop up for 50-180 ms now and then (priority
inversion): the status p99 during 20 publishes was 10-53 ms from run to run, and 9-10 ms in
every run with all threads real-time.

The API's threads mostly wait: on sockets, on PostgreSQL (which runs at the normal policy and
does the heavy lifting of queries). CPU-heavy requests are bounded by the body limit and the
publish rate limit; should a thread ever spin, the kernel's real-time throttling (95% of each
second by default) keeps the host usable. Processes the API might fork get the normal policy
back. Needs root or CAP_SYS_NICE; without either the process keeps the normal policy.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger("marketplace.realtime")
PRIORITY = 1  # the lowest real-time priority: ahead of all normal threads, behind the kernel's own


def make_process_realtime() -> bool:
    """SCHED_RR for every thread of this process; threads started later inherit it. False when
    not permitted (or not Linux)."""
    if not hasattr(os, "sched_setscheduler"):
        return False
    try:
        for thread_id in _threads():
            # Per thread (Linux schedules threads). No SCHED_RESET_ON_FORK: it would give the
            # threads started later the normal policy too, not only forked processes.
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                os.sched_setscheduler(thread_id, os.SCHED_RR, os.sched_param(PRIORITY))
    except PermissionError:
        log.info("the API runs at the normal CPU policy: real-time (SCHED_RR) needs root or CAP_SYS_NICE")
        return False
    os.register_at_fork(after_in_child=_normal_policy)
    log.info("the API's threads run at real-time priority (SCHED_RR %d)", PRIORITY)
    return True


def _threads() -> list[int]:
    return [int(entry.name) for entry in Path("/proc/self/task").iterdir()]


def _normal_policy() -> None:
    """A forked process is not the API: back to the normal policy."""
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def policy_of(thread_id: int) -> int:
    """The scheduling policy of a thread (os.SCHED_OTHER, os.SCHED_RR, ...), without the reset-on-fork flag."""
    return os.sched_getscheduler(thread_id) & ~os.SCHED_RESET_ON_FORK
