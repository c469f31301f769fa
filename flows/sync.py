"""Keeping the external registry in step with metadata changed in place."""

from __future__ import annotations

from prefect import flow

from tasks.registry import RegistryUpdateInput, update_registry_entry
from tasks.run_log import log_origin


@flow(name="sync-registry", retries=0, log_prints=False)
def sync_registry(service_id: str) -> str:
    """Push a live service's current metadata to its registry entry."""
    log_origin("registry sync started")
    return update_registry_entry(RegistryUpdateInput(service_id=service_id))
