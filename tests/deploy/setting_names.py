"""Which environment variables are settings: the marketplace's (core/settings.py) and Prefect's."""

from __future__ import annotations

import re
from functools import cache

from pydantic import AliasChoices, BaseModel
from pydantic_settings import BaseSettings

from core.settings import PROJECT_ROOT, Settings

PREFIX = "MARKETPLACE_"
# Groups the gateway adds to Settings (its branch); until they are there, their names cannot be checked.
GATEWAY_GROUPS = frozenset({"gateway", "usage", "consumption"})


def _has_field(model: type[BaseModel], parts: list[str]) -> bool:
    field = model.model_fields.get(parts[0].lower())
    if field is None:
        return False
    if len(parts) == 1:
        return True
    nested = field.annotation
    return isinstance(nested, type) and issubclass(nested, BaseModel) and _has_field(nested, parts[1:])


def is_marketplace_setting(name: str) -> bool:
    """MARKETPLACE_GROUP__FIELD names a field of Settings (nested groups split on `__`)."""
    return name.startswith(PREFIX) and _has_field(Settings, name.removeprefix(PREFIX).split("__"))


def gateway_group(name: str) -> bool:
    return name.startswith(PREFIX) and name.removeprefix(PREFIX).split("__")[0].lower() in GATEWAY_GROUPS


def gateway_settings_present() -> bool:
    return all(group in Settings.model_fields for group in GATEWAY_GROUPS)


def _prefect_names(model: type[BaseSettings]) -> set[str]:
    """The variables a Prefect settings model reads: its fields' aliases, or prefix + field name."""
    names: set[str] = set()
    prefix = str(model.model_config.get("env_prefix", ""))
    for field_name, field in model.model_fields.items():
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseSettings):
            names |= _prefect_names(nested)
        elif isinstance(field.validation_alias, AliasChoices):
            names |= {alias.upper() for alias in field.validation_alias.choices if isinstance(alias, str)}
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


@cache
def prefect_setting_names() -> frozenset[str]:
    """Every PREFECT_* variable of Prefect's settings and of prefect-redis (the messaging on Redis)."""
    from prefect.settings import Settings as PrefectSettings
    from prefect_redis.client import RedisMessagingSettings

    return frozenset(_prefect_names(PrefectSettings) | _prefect_names(RedisMessagingSettings))


@cache
def prefect_yaml_variables() -> frozenset[str]:
    """Variables prefect.yaml reads when `prefect deploy` applies it (`{{ $NAME }}`)."""
    text = (PROJECT_ROOT / "prefect.yaml").read_text()
    return frozenset(re.findall(r"\{\{\s*\$([A-Z_][A-Z0-9_]*)\s*\}\}", text))
