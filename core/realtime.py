"""A latency-critical thread ahead of batch work on a shared host: the SCHED_RR real-time policy.

Measured on 2 cores with the whole platform on them (bench/status_load.py): while 20 publishes
ran, status reads waited 20-120 ms before the API's event loop even looked at them, although
the API needed a fraction of one core. The loop thread was runnable but not running: the Linux
scheduler gives a waking thread the CPU only when it has earned it against the other runnable
threads, and nice values (the API at 0, Prefect and the workers niced) change shares, not how
soon a thread that wakes up runs. A real-time thread runs as soon as it is runnable, ahead of
every normal thread. With the loop thread at SCHED_RR the status p99 went from 36-90 ms to ~10 ms.

Only the event loop thread gets it, with SCHED_RESET_ON_FORK: threads it starts (the thread
pool doing database work and validation) are normal threads, so CPU-heavy work never runs at
real-time priority. The loop only parses requests and hands work off; should it ever spin, the
kernel's real-time throttling (95% of each second by default) and the other core keep the host
usable. Needs root or CAP_SYS_NICE; without either, the thread keeps the normal policy.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger("marketplace.realtime")
PRIORITY = 1  # the lowest real-time priority: ahead of all normal threads, behind the kernel's own


def make_this_thread_realtime() -> bool:
    """SCHED_RR for the calling thread only (children get the normal policy). False when not permitted."""
    if not hasattr(os, "sched_setscheduler"):  # not Linux
        return False
    try:
        # pid 0: the calling thread (Linux schedules threads; the rest of the process is untouched).
        os.sched_setscheduler(0, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(PRIORITY))
    except PermissionError:
        log.info("the API's event loop runs at the normal CPU policy: real-time (SCHED_RR) needs root or CAP_SYS_NICE")
        return False
    log.info("the API's event loop thread %s runs at real-time priority (SCHED_RR)", threading.get_native_id())
    return True


def policy_of(thread_id: int) -> int:
    """The scheduling policy of a thread (os.SCHED_OTHER, os.SCHED_RR, ...), without the reset-on-fork flag."""
    return os.sched_getscheduler(thread_id) & ~os.SCHED_RESET_ON_FORK
