"""Prefect automations the platform relies on, applied with the deployments.

A self-hosted Prefect server does not notice by itself that the process running a flow run
died: with the warm worker a lost process takes every run it held with it, and no worker is
left to report them. Flow runs send heartbeats (PREFECT_FLOWS_HEARTBEAT_FREQUENCY); this
automation marks a run `Crashed` when its heartbeats stop without the run reaching another
state, and the reconcile deployment's trigger on `Crashed` then compensates it.

A run's first heartbeat comes only once it runs. A worker host lost after claiming a run
(`Pending`) and before the run's first heartbeat would leave it `Pending` (or `Running`)
forever, so the claim and the start open the same wait as a heartbeat does: whatever the last
sign of life was, nothing further within the window means the run was lost (the multi-host test,
tests/multihost/, loses a worker host while it holds runs).

`python -m deployments.automations --within 90` applies it (idempotent: replaced by name).
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta

from prefect.automations import Automation, ChangeFlowRunState, EventTrigger, Posture
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType

CRASH_DETECTION = "marketplace-crashed-flow-runs"

# The signs of life that open the wait: a heartbeat, and the claim and start before the first one.
SIGNS_OF_LIFE = ["prefect.flow-run.heartbeat", "prefect.flow-run.Pending", "prefect.flow-run.Running"]

# After a sign of life, any of these says the run is alive or no longer running.
ALIVE_OR_SETTLED = [
    "prefect.flow-run.heartbeat",
    "prefect.flow-run.Running",
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Cancelled",
    "prefect.flow-run.Cancelling",
    "prefect.flow-run.Crashed",
    "prefect.flow-run.Paused",
    "prefect.flow-run.Suspended",
    "prefect.flow-run.Scheduled",
    "prefect.flow-run.AwaitingRetry",
    "prefect.flow-run.AwaitingConcurrencySlot",
]


def crash_detection(within_seconds: int) -> Automation:
    return Automation(
        name=CRASH_DETECTION,
        description=(
            "Mark a flow run Crashed when it shows no sign of life (heartbeat, start) for the window "
            "after being claimed or while running (its process died); the reconcile deployment then "
            "compensates it."
        ),
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            after=set(SIGNS_OF_LIFE),
            expect=set(ALIVE_OR_SETTLED),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no sign of life for {within_seconds} s: the process running it was lost",
            )
        ],
    )


async def apply(within_seconds: int) -> None:
    """Create the automation, replacing an earlier one of the same name."""
    async with get_client() as client:
        for existing in await client.read_automations_by_name(CRASH_DETECTION):
            if existing.id is not None:
                await client.delete_automation(existing.id)
    await crash_detection(within_seconds).acreate()


def main() -> None:
    parser = argparse.ArgumentParser(description="Apply the platform's Prefect automations.")
    parser.add_argument("--within", type=int, default=90, help="seconds without a heartbeat before Crashed")
    args = parser.parse_args()
    asyncio.run(apply(args.within))


if __name__ == "__main__":
    main()
