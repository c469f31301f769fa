"""A flow for the warm worker's drain tests: as slow as asked, under the publish flow's name.

Named `publish-service` so that its runs are runs of the publish flow to the Prefect server, and
the reconcile deployment's trigger on a crashed publish run applies to them as to real ones.
"""

from __future__ import annotations

import time

from prefect import flow, task


@task
def wait(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@flow(name="publish-service")
def slow_publish(seconds: float) -> float:
    """One task that sleeps `seconds`."""
    return wait(seconds)
