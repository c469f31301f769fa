"""The flow runs a warm worker holds, on disk, so the worker that replaces it can report them crashed.

A warm worker runs many flow runs in one process; when the process dies (killed, out of memory)
every run it held dies with it, and Prefect only learns of it when the runs' heartbeats have been
missing long enough for the crash automation (deployments/automations.py, 90 s by default). The
stack restarts a dead worker within seconds: the new process reads what its predecessor held and
marks those runs `Crashed` at once, which fires the reconcile deployment like any crash.

The ledger is a small file rewritten (atomically) when a run is taken or let go: a handful of ids,
far cheaper than a call to Prefect per run. It lives on the worker's host, so it covers restarts in
place (the stack runner, systemd, a Kubernetes container restart with an emptyDir); a host that is
lost for good is still covered by the heartbeat automation.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed

log = logging.getLogger("marketplace.run_ledger")

HELD_STATES = frozenset({StateType.PENDING, StateType.RUNNING})


class RunLedger:
    """The ids of the runs this process holds, mirrored to `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def previous(self) -> list[str]:
        """What the last process with this ledger held when it stopped (nothing after a clean stop)."""
        try:
            return [str(UUID(run_id)) for run_id in json.loads(self.path.read_text())]
        except FileNotFoundError:
            return []
        except (ValueError, TypeError):
            log.warning("unreadable run ledger %s: ignored", self.path)
            return []

    def take(self, flow_run_id: UUID) -> None:
        with self._lock:
            self._held.add(str(flow_run_id))
            self._write()

    def release(self, flow_run_id: UUID) -> None:
        with self._lock:
            self._held.discard(str(flow_run_id))
            self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(sorted(self._held)))
        temporary.replace(self.path)  # a reader never sees half a file


async def crash_orphans(client: PrefectClient, ledger: RunLedger) -> list[str]:
    """Mark `Crashed` the runs a dead predecessor held that are still pending or running; returns their ids."""
    crashed = []
    for run_id in ledger.previous():
        try:
            run = await client.read_flow_run(UUID(run_id))
        except ObjectNotFound:
            continue
        if run.state is None or run.state.type not in HELD_STATES:
            continue
        message = "the worker running it died (process lost); its replacement reported the run"
        await client.set_flow_run_state(run.id, Crashed(message=message), force=True)
        crashed.append(run_id)
        log.warning("flow run %s (%s) was held by a worker that died: marked Crashed", run.name, run_id)
    ledger.path.unlink(missing_ok=True)
    return crashed
