"""Search index writes: the version going live is indexed just before activation; later the
index follows the database (deprecated stays findable on request, retired and failed vanish)."""

from __future__ import annotations

from datetime import datetime

from prefect import task
from pydantic import BaseModel

from checks.timing import timed
from core.domain import LIVE, Outcome, Phase, PhaseOutcome, ServiceStatus
from storage.database import session_scope
from storage.models import Service
from storage.repositories import services, versions
from storage.search import document_from_service
from tasks._common import PhaseInput, backoff, jitter, record_outcomes
from tasks.context import flow_context


class ServiceRef(BaseModel):
    service_id: str
    flow_run_id: str | None = None


def index_version(inp: PhaseInput, published_at: datetime) -> PhaseOutcome:
    """Put the version about to go live into the search index (undone by `sync_search_entry`);
    part of the activation task, which then writes the same `published_at` to the database."""

    def check() -> PhaseOutcome:
        with session_scope() as session:
            service = services.get(session, inp.service_id)
            version = versions.get(session, inp.version_id)
            spec = version.spec
            # A detached row describing the service as it will be once this version is active.
            live = Service(
                id=service.id,
                name=service.name,
                version=version.version,
                description=spec["description"],
                provider_id=service.provider_id,
                provider_name=service.provider_name,
                category=spec["category"],
                tags=list(spec.get("tags", [])),
                spec=spec,
                status=ServiceStatus.ACTIVE.value,
                # The instant the activation is about to write, or (a retry after it was written) wrote:
                # the service, the list and the search then show the same one.
                published_at=version.published_at or published_at,
            )
            document = document_from_service(live, session)  # with the service's signals
        flow_context().search_index.index(document)
        flow_context().cache.invalidate([inp.service_id])
        evidence = {"backend": flow_context().settings.search.backend, "version": version.version}
        return PhaseOutcome(phase=Phase.ACTIVATION, check="search_index", outcome=Outcome.PASSED, evidence=evidence)

    outcome, started_at = timed(check)
    record_outcomes(inp, [(outcome, started_at)], next_phase=Phase.ACTIVATION)
    return outcome


@task(name="sync-search-entry", retries=5, retry_delay_seconds=backoff(5), retry_jitter_factor=jitter())
def sync_search_entry(inp: ServiceRef) -> str:
    """Make the index say what the database says: the live version's document, or nothing."""
    with session_scope() as session:
        service = services.get(session, inp.service_id)
        document = document_from_service(service) if ServiceStatus(service.status) in LIVE else None
    index = flow_context().search_index
    if document is None:
        index.remove(inp.service_id)
    else:
        index.index(document)
    flow_context().cache.invalidate([inp.service_id])
    return "indexed" if document else "removed"
