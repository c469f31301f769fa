"""Every touch of a private Prefect name, in one place, for the Prefect versions it was written for.

Prefect's public API covers flows, tasks, deployments, clients, workers and events; a few things
this platform needs are only reachable through Prefect's internals. Each one lives in a module of
this package, with why no public way exists:

- `sqlite`: the Prefect server on SQLite begins every transaction IMMEDIATE (a burst no longer
  fails with `database is locked`);
- `suspension`: one shared watch for suspensions requested from outside a run, for every run of
  the warm worker, instead of a thread, client and event subscription per run;
- `client_tls`: one verifying TLS context per CA file for all of Prefect's clients in a process.

The warm worker itself (deployments/warm_worker.py) uses only BaseWorker's public hooks and the
public events client. tests/deployments/test_prefect_contract.py pins what each module assumes
(names, signatures, events, behaviour), and tests/deployments/test_prefect_seam.py checks that no
other module of the project touches a private Prefect name. Every entry point that uses the seam
calls `require_supported_prefect()` first. How to upgrade Prefect: docs/prefect-upgrade.md.

Submodules are imported where they are used: the Prefect server's process needs only `sqlite`,
and importing `suspension` would load Prefect's flow engine into it.
"""

from __future__ import annotations

from deployments.prefect_compat.sqlite import serialize_sqlite_writes
from deployments.prefect_compat.version import (
    SUPPORTED_PREFECT,
    UPGRADE_GUIDE,
    UnsupportedPrefectVersion,
    require_supported_prefect,
)

__all__ = [
    "SUPPORTED_PREFECT",
    "UPGRADE_GUIDE",
    "UnsupportedPrefectVersion",
    "require_supported_prefect",
    "serialize_sqlite_writes",
]
