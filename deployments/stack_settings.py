"""What only the local stack runner reads (`make up`, the end-to-end tests, the benchmarks)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.settings import PROJECT_ROOT


class StackSettings(BaseSettings):
    """MARKETPLACE_STACK__* variables: where the stack runner puts Prefect."""

    model_config = SettingsConfigDict(env_prefix="MARKETPLACE_STACK__", extra="ignore")

    prefect_port: int = Field(default=4200, ge=1, le=65535, description="Port of the Prefect server and UI.")
    prefect_home: Path = Field(
        default=PROJECT_ROOT / ".prefect",
        description="PREFECT_HOME of the stack: Prefect's SQLite database, its result storage, the workers' ledgers.",
    )
