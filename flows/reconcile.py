"""Recovery: publications whose run died (process killed, approval expired) are compensated and failed.

Prefect marks a run CRASHED when its process dies under a worker, and FAILED when a suspended
run's timeout passes; neither tells our database. This flow runs on a schedule, finds those
versions and does what the dead run could not: undo its outward writes and fail it with the reason.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from tasks._common import PhaseInput
from tasks.indexing import ServiceRef, sync_search_entry
from tasks.lifecycle import RollbackInput, record_rollback
from tasks.publish_report import write_publish_report
from tasks.reconcile import StalledPublication, fail_stalled, find_stalled_publications
from tasks.registry import RegistryEntryInput, remove_registry_entry


# One fixed name for every run (the schedule and the trigger cannot name the runs they create;
# Prefect renames the run when it starts, one call per reconcile run, which is rare).
@flow(name="reconcile-publications", flow_run_name="reconcile publications", retries=0, log_prints=False)
def reconcile_publications() -> int:
    """Compensate and fail every publication whose flow run ended without finishing it."""
    stalled = find_stalled_publications()
    for publication in stalled:
        _compensate(publication)
        get_run_logger().warning("failed %s: %s", publication.version_id, publication.reason)
    return len(stalled)


def _compensate(publication: StalledPublication) -> None:
    ids = {
        "service_id": publication.service_id,
        "version_id": publication.version_id,
        "flow_run_id": publication.flow_run_id,
    }
    steps = []
    if publication.registry_id:
        remove_registry_entry(RegistryEntryInput(**ids, registry_id=publication.registry_id))
        steps.append("remove_registry_entry")
    if steps:
        record_rollback(RollbackInput(**ids, steps=steps))
    if fail_stalled(publication) == "failed":  # the dead run's page tells why, as a finished run's does
        write_publish_report(PhaseInput(**ids), compensation=steps)
    # a run killed between indexing and activation leaves a search entry the database disowns
    sync_search_entry(ServiceRef(service_id=publication.service_id, flow_run_id=publication.flow_run_id))
