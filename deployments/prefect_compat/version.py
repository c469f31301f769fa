"""The Prefect versions the seam was written and checked against, and the start-up check."""

from __future__ import annotations

import prefect

# Exact releases: Prefect changes its internals in patch releases too (prefect._flow_run_suspension
# is newer than 3.8.0), so a version is added here only once the contract tests pass on it.
SUPPORTED_PREFECT = ("3.8.8",)
UPGRADE_GUIDE = "docs/prefect-upgrade.md"


class UnsupportedPrefectVersion(RuntimeError):
    """The installed Prefect is not one the seam was written for."""


def require_supported_prefect(version: str | None = None) -> None:
    """Refuse to start on a Prefect whose internals the seam has not been checked against.

    Called first by every entry point that uses the seam (the warm worker, the stack's Prefect
    server and services): a Prefect upgrade then fails at start with this message, not later with
    an AttributeError in the middle of a flow run.
    """
    found = prefect.__version__ if version is None else version
    if found not in SUPPORTED_PREFECT:
        raise UnsupportedPrefectVersion(
            f"Prefect {found} is installed, but deployments/prefect_compat was written for Prefect "
            f"{', '.join(SUPPORTED_PREFECT)} (it uses Prefect internals that change between releases). "
            f"Install a supported one (`pip install prefect=={SUPPORTED_PREFECT[-1]}`, as requirements.lock "
            f"pins), or upgrade the seam: follow {UPGRADE_GUIDE} (run tests/deployments/test_prefect_contract.py "
            "against the new Prefect, adapt each failing assumption, then add the version to SUPPORTED_PREFECT)."
        )
