"""The API's view of Prefect: start publish runs and read their state."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.responses import SetStateStatus
from prefect.context import SettingsContext, get_settings_context
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES
from prefect.states import Cancelled
from prefect.telemetry.run_telemetry import LABELS_TRACEPARENT_KEY

from api.status.run_states import RunStateCache
from core.errors import ConflictError, UpstreamUnavailableError
from core.settings import PrefectSettings
from storage.repositories.run_requests import RunSpec

log = logging.getLogger("marketplace.orchestrator")

FINAL_RUN_STATE_TTL_SECONDS = 20.0  # a finished run's state moves only if an operator retries the run
FINAL_STATE_TYPES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})


@dataclass(frozen=True)
class RunState:
    type: str
    name: str
    message: str | None


class Orchestrator:
    """A long-lived Prefect client shared by the API's worker threads (httpx clients are thread-safe).

    Every call is one attempt bounded by `request_timeout_seconds`: the Prefect client would
    otherwise retry a lost connection five times with exponential backoff (about a minute),
    holding the provider's request and an API thread. A request that cannot reach Prefect
    fails at once with 503, and the caller retries.

    Run states are kept per flow run and read again in the background every `run_state_seconds`
    while polled (api/status/run_states.py): status reads never wait for the Prefect server.
    """

    def __init__(
        self,
        settings: PrefectSettings,
        *,
        state_ttl: float | None = None,
    ) -> None:
        self._settings = settings
        self._client = SyncPrefectClient(settings.api_url, httpx_settings={"timeout": settings.request_timeout_seconds})
        # Creating runs may wait longer for a server busy with a burst of them (a 503 would only
        # make the provider send it again); an unreachable server still fails at connect.
        start_timeout = httpx.Timeout(settings.start_timeout_seconds, connect=settings.request_timeout_seconds)
        self._starter = SyncPrefectClient(settings.api_url, httpx_settings={"timeout": start_timeout})
        self._deployment_ids: dict[str, UUID] = {}
        self._lock = threading.Lock()
        context = get_settings_context()
        self._profile = context.profile
        self._one_attempt = context.settings.copy_with_update(updates={PREFECT_CLIENT_MAX_RETRIES: 0})
        self._states: RunStateCache[RunState] = RunStateCache(
            self._read_states,
            ttl=state_ttl if state_ttl is not None else settings.run_state_seconds,
            is_final=lambda state: state.type in FINAL_STATE_TYPES,
            final_ttl=FINAL_RUN_STATE_TTL_SECONDS,
        )

    @contextmanager
    def _bounded(self) -> Iterator[None]:
        """No client-side retries for the calls made inside (a fresh context per call: threads share self)."""
        with SettingsContext(profile=self._profile, settings=self._one_attempt):
            yield

    def open(self) -> None:
        self._client.__enter__()
        self._starter.__enter__()

    def close(self) -> None:
        self._states.close()
        self._starter.__exit__(None, None, None)
        self._client.__exit__(None, None, None)

    def run_url(self, flow_run_id: str) -> str:
        """Where an operator sees the run in the Prefect UI."""
        return f"{self._settings.ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}"

    def resume_with(self, flow_run_id: str, run_input: dict[str, Any]) -> None:
        """Resume a suspended run with its input, as the Prefect UI's Resume form does."""
        try:
            with self._bounded():
                result = self._client.resume_flow_run(UUID(flow_run_id), run_input=run_input)
        except Exception as exc:
            raise _unavailable(exc) from exc
        finally:
            self._states.forget(flow_run_id)
        if result.status != SetStateStatus.ACCEPT:
            reason = result.details.reason if hasattr(result.details, "reason") else result.status.value
            raise ConflictError(f"the waiting run cannot be resumed: {reason}")

    def cancel(self, flow_run_id: str) -> None:
        """Cancel a scheduled run (a retirement that should no longer happen)."""
        try:
            with self._bounded():
                self._client.set_flow_run_state(
                    UUID(flow_run_id), Cancelled(message="cancelled by the marketplace"), force=True
                )
        except Exception as exc:
            raise _unavailable(exc) from exc
        finally:
            self._states.forget(flow_run_id)

    def create_run(self, run: RunSpec) -> str:
        """Create the flow run of a deployment: one attempt, bounded by the start timeout. The
        idempotency key makes a retried call (after a timeout, a crash) return the run the first
        call created instead of a second one. Raises UpstreamUnavailableError."""
        read_at = time.time()
        try:
            with self._bounded():
                created = self._starter.create_flow_run_from_deployment(
                    self._deployment_id(run.deployment),
                    parameters=run.parameters,
                    idempotency_key=run.idempotency_key,
                    name=run.run_name,
                    tags=run.run_tags() or None,
                    labels=_trace_labels(run),
                )
        except Exception as exc:
            log.warning("cannot start %s: %s", run.deployment, exc)
            raise _unavailable(exc) from exc
        self._states.put(str(created.id), _state_of(created), read_at)  # the first status read need not ask
        return str(created.id)

    def _deployment_id(self, name: str) -> UUID:
        with self._lock:
            if name not in self._deployment_ids:
                self._deployment_ids[name] = self._starter.read_deployment_by_name(name).id
            return self._deployment_ids[name]

    def run_state(self, flow_run_id: str, not_before: float | None = None) -> RunState | None:
        """The run's Prefect state as last read, without waiting (None: not read yet); about a second old
        at most while the run is polled and Prefect answers.

        `not_before` (epoch seconds): a state read before then is read again at once (in the
        background); the status report passes the time its record says the run ended.
        """
        return self._states.get(flow_run_id, not_before)

    def _read_states(self, flow_run_ids: list[str]) -> dict[str, RunState | None]:
        """Several runs' states in one request (the background refresh)."""
        run_filter = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in flow_run_ids]))
        try:
            with self._bounded():
                runs = self._client.read_flow_runs(flow_run_filter=run_filter, limit=len(flow_run_ids))
        except Exception as exc:
            log.warning("cannot read %d flow run(s): %s", len(flow_run_ids), exc)
            return {}
        return {str(run.id): _state_of(run) for run in runs}

    def healthy(self) -> bool:
        """Whether the Prefect API answers its health check."""
        with self._bounded():
            return self._client.api_healthcheck() is None


def _trace_labels(run: RunSpec) -> dict[str, bool | int | float | str] | None:
    """The request's trace context as the run label from which Prefect's run telemetry continues
    the trace: the flow run's span becomes a child of the API request's span (docs/observability.md)."""
    return {LABELS_TRACEPARENT_KEY: run.traceparent} if run.traceparent else None


def _state_of(run: FlowRun) -> RunState | None:
    if run.state is None:
        return None
    return RunState(type=run.state.type.value, name=run.state.name or run.state.type.value, message=run.state.message)


def _unavailable(exc: Exception) -> UpstreamUnavailableError:
    """The client gets a plain 503; the detail (internal URLs, hosts) goes to the log only."""
    log.warning("Prefect call failed: %s: %s", type(exc).__name__, exc)
    return UpstreamUnavailableError("the orchestrator (Prefect) is unavailable; retry later")
