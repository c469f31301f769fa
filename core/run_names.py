"""What a flow run about a service is called in the Prefect UI, and the tags that find its runs.

Given when the run is created (`create_flow_run_from_deployment(name=..., tags=...)`): a flow
whose `flow_run_name` is set is renamed by Prefect's engine when it starts, one more API call
per run. Pure, so whoever creates a run (the API, a starter draining an intake table, a flow
scheduling the next one) computes the same label from what it has at hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class RunKind(StrEnum):
    """The flows that work on one service; the value opens the run's name."""

    PUBLISH = "publish"
    DEPRECATE = "deprecate"
    RETIRE = "retire"
    SYNC_REGISTRY = "sync-registry"
    APPROVE_ACCESS = "approve-access"


@dataclass(frozen=True)
class RunLabel:
    """A flow run's name and the tags it is created with."""

    name: str
    tags: tuple[str, ...]


MAX_PART = 128  # a provider id, service name or version longer than this is cut (names stay readable)
_SPACE = re.compile(r"\s+")


def run_label(
    kind: RunKind, *, provider_id: str, service_name: str, service_id: str, version: str | None = None
) -> RunLabel:
    """`publish acme/chat-pro 1.2.0` (the version for publish runs), tagged `provider:acme`, `service:<id>`."""
    subject = f"{_part(provider_id)}/{_part(service_name)}"
    name = f"{kind.value} {subject} {_part(version)}" if version else f"{kind.value} {subject}"
    return RunLabel(name=name, tags=(f"provider:{_part(provider_id)}", f"service:{service_id}"))


def publish_run_label(spec: dict[str, Any], service_id: str) -> RunLabel:
    """The publish run's label from a spec that passed the JSON Schema (provider.id, name, version)."""
    return run_label(
        RunKind.PUBLISH,
        provider_id=str(spec["provider"]["id"]),
        service_name=str(spec["name"]),
        service_id=service_id,
        version=str(spec["version"]),
    )


def _part(value: str | None) -> str:
    """One line, single spaces: a provider id may be any string, and a name is shown on one line."""
    return _SPACE.sub(" ", value or "").strip()[:MAX_PART]
