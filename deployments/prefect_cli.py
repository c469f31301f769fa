"""Prefect's command line for the long-running Prefect processes the stack starts (its API
server, its background services), with their start-up objects frozen out of the garbage
collector's walks (core/gc_pauses.py).

After importing its API the Prefect server holds ~280,000 objects and one full collection took
~160 ms on an idle core. Over a benchmark of 120 publishes the server and its services ran 17
full collections (start-up's among them), up to 0.26 s each, while every call of the workers
and the API to that process waited; with the start-up objects frozen, those during the burst
took 56-89 ms.

On SQLite (the embedded default) its transactions take the write lock when they begin
(deployments/prefect_compat/sqlite.py `serialize_sqlite_writes`): a burst no longer fails with
`database is locked`.

    python -m deployments.prefect_cli server start ...   # as `prefect server start ...`
"""

from __future__ import annotations

import prefect.server.api.server  # noqa: F401  # the server's app, models and orchestration rules
from prefect.cli import app

from core.gc_pauses import freeze_startup_objects
from deployments.prefect_compat import require_supported_prefect, serialize_sqlite_writes


def main() -> None:
    require_supported_prefect()
    serialize_sqlite_writes()  # only Prefect's SQLite configuration is changed (the embedded default)
    freeze_startup_objects()
    app()


if __name__ == "__main__":
    main()
