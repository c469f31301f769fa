"""What only the local stack runner reads (`make up`, the end-to-end tests, the benchmarks).

These are not part of `core.settings.Settings`: the API, the gateway, the workers and the flows never
read them. Each is `MARKETPLACE_STACK__<NAME>`; the ones that lived in the main settings tree before
still answer to their old names (`MARKETPLACE_PREFECT__SERVER_WORKERS` ...), which docs/configuration.md
lists beside the new ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.settings import PROJECT_ROOT

PREFIX = "MARKETPLACE_STACK__"


def _names(field: str, *old: str) -> AliasChoices:
    """The field's variable, then the names it had before it moved here."""
    return AliasChoices(f"{PREFIX}{field.upper()}", *old)


class StackSettings(BaseSettings):
    """MARKETPLACE_STACK__* variables: where the stack runner puts Prefect, how many processes it
    starts and at which CPU priority. The nice values let batch work yield the cores to the API, whose
    callers are waiting (on one host; in production the parts get hosts or CPU shares of their own)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", populate_by_name=True)

    prefect_port: int = Field(
        default=4200,
        ge=1,
        le=65535,
        validation_alias=_names("prefect_port"),
        description="Port of the Prefect server and UI.",
    )
    prefect_home: Path = Field(
        default=PROJECT_ROOT / ".prefect",
        validation_alias=_names("prefect_home"),
        description="PREFECT_HOME of the stack: Prefect's SQLite database, its result storage, the workers' ledgers.",
    )
    prefect_server_workers: int = Field(
        default=1,
        ge=1,
        le=16,
        validation_alias=_names("prefect_server_workers", "MARKETPLACE_PREFECT__SERVER_WORKERS"),
        description="Processes of Prefect's API server (`prefect server start --workers`); more than one needs "
        "`prefect.redis_url` (and PostgreSQL): one process serializes every call of the API and the workers.",
    )
    prefect_late_after_seconds: float = Field(
        default=60.0,
        gt=0,
        validation_alias=_names("prefect_late_after_seconds", "MARKETPLACE_PREFECT__LATE_AFTER_SECONDS"),
        description="How long past its start time a scheduled flow run waits before Prefect marks it Late "
        "(`PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS`; Prefect's default is 15). A burst of publishes "
        "queues for the worker's slots for longer than 15 s, and marking each queued run Late is a state change "
        "with its events: work for the server and nothing for an operator, who should see runs no worker takes.",
    )
    prefect_server_nice: int = Field(
        default=5,
        ge=0,
        le=19,
        validation_alias=_names("prefect_server_nice", "MARKETPLACE_PREFECT__SERVER_NICE"),
        description="How much lower the CPU priority of Prefect's API server is than the API's (nice).",
    )
    prefect_services_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        validation_alias=_names("prefect_services_nice", "MARKETPLACE_PREFECT__SERVICES_NICE"),
        description="How much lower the CPU priority of Prefect's background services is (nice). "
        "Their event backlog waits while the API, the Prefect API server and the worker need the cores.",
    )
    worker_processes: int = Field(
        default=1,
        ge=1,
        le=64,
        validation_alias=_names("worker_processes", "MARKETPLACE_WORKER__PROCESSES"),
        description="Warm worker processes. Each runs flow runs in threads of one interpreter, so one "
        "process uses at most one core for the flows' Python work; one per core uses them all.",
    )
    worker_nice: int = Field(
        default=5,
        ge=0,
        le=19,
        validation_alias=_names("worker_nice", "MARKETPLACE_WORKER__NICE"),
        description="How much lower the workers' CPU priority is than the API's (nice): publishing is "
        "batch work, a status read is someone waiting.",
    )

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> StackSettings:
        """As read from `env` (the stack's environment: this process's, with the stack config's extra
        variables over it) instead of `os.environ`. Empty values count as unset."""
        names = {name for field in cls.model_fields.values() for name in _aliases(field.validation_alias)}
        return cls.model_validate({name: value for name, value in env.items() if name in names and value})


def _aliases(alias: object) -> list[str]:
    return [str(choice) for choice in alias.choices] if isinstance(alias, AliasChoices) else []
