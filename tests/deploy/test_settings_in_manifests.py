"""Every variable the manifests set is a setting of the process that reads it, and its value is accepted."""

from __future__ import annotations

import json
import os

import pytest
from cryptography.fernet import Fernet

from core.settings import Environment, Settings
from tests.deploy.manifests import (
    BASE,
    OVERLAY,
    Container,
    base_documents,
    containers,
    environment_names,
    expand,
    generated_config_maps,
    secret_templates,
)
from tests.deploy.setting_names import (
    gateway_group,
    gateway_settings_present,
    is_marketplace_setting,
    prefect_setting_names,
    prefect_yaml_variables,
)

# What an operator puts into the Secrets (the template has the keys only), for the values' checks.
SECRET_VALUES = {
    "MARKETPLACE_DATABASE__URL": "postgresql+psycopg://marketplace:pw@postgres:5432/marketplace",
    "MARKETPLACE_CACHE__REDIS_URL": "redis://:pw@redis:6379/0",
    "MARKETPLACE_WEBHOOKS__SECRET": "w" * 40,
    "MARKETPLACE_CONSUMPTION__KEY_PEPPER": "p" * 40,
    "MARKETPLACE_CONSUMPTION__ENCRYPTION_KEYS": json.dumps({"k1": Fernet.generate_key().decode()}),
    "PREFECT_API_DATABASE_CONNECTION_URL": "postgresql+asyncpg://prefect:pw@postgres:5432/prefect",
    "PREFECT_REDIS_MESSAGING_URL": "redis://:pw@redis:6379/1",
    "PREFECT_SERVER_DOCKET_URL": "redis://:pw@redis:6379/1",
}


def every_variable() -> set[str]:
    """Names from the ConfigMaps (base and overlay), the containers' own env and the Secrets they read whole."""
    names = {key for data in generated_config_maps(BASE, OVERLAY).values() for key in data}
    names |= {var["name"] for c in containers(base_documents()) for var in c.spec.get("env", [])}
    read_whole = {name for c in containers(base_documents()) for name in c.secrets()}
    return names | {key for name in read_whole for key in secret_templates()[name]}


def test_the_secret_values_here_cover_the_template():
    read_whole = {name for c in containers(base_documents()) for name in c.secrets()}
    assert {key for name in read_whole for key in secret_templates()[name]} == set(SECRET_VALUES)


def test_every_variable_is_marketplace_or_prefect():
    assert {n for n in every_variable() if not n.startswith(("MARKETPLACE_", "PREFECT_"))} == set()


def test_every_marketplace_variable_is_a_setting():
    """A field of core/settings.py's Settings, or a variable prefect.yaml reads (`{{ $NAME }}`)."""
    names = {n for n in every_variable() if n.startswith("MARKETPLACE_") and not gateway_group(n)}
    unknown = {n for n in names if not is_marketplace_setting(n)} - prefect_yaml_variables()
    assert unknown == set()


def test_every_gateway_variable_is_a_gateway_setting():
    if not gateway_settings_present():
        pytest.skip("the gateway's settings (gateway, usage, consumption) are not on this branch yet")
    names = {n for n in every_variable() if gateway_group(n)}
    assert names
    assert {n for n in names if not is_marketplace_setting(n)} == set()


def test_every_prefect_variable_is_a_prefect_setting():
    names = {n for n in every_variable() if n.startswith("PREFECT_")}
    assert names - prefect_setting_names() == set()


def container_environment(container: Container) -> dict[str, str]:
    """What the container's process sees: ConfigMaps, Secrets (filled in), its env with `$(…)` expanded."""
    env = environment_names(container, generated_config_maps(BASE, OVERLAY))
    env.update({k: v for k, v in SECRET_VALUES.items() if k in env})
    return {name: expand(value, env) for name, value in env.items()}


def marketplace_containers() -> list[Container]:
    return [c for c in containers(base_documents()) if "marketplace-config" in c.config_maps()]


@pytest.mark.parametrize("container", marketplace_containers(), ids=lambda c: c.id)
def test_each_process_accepts_its_marketplace_settings(container, monkeypatch):
    """Settings() with the container's environment passes the production validators (a process refuses
    to start otherwise)."""
    for name in list(os.environ):
        if name.startswith("MARKETPLACE_"):
            monkeypatch.delenv(name)
    for name, value in container_environment(container).items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.environment is Environment.PRODUCTION
    assert settings.database.url == SECRET_VALUES["MARKETPLACE_DATABASE__URL"]
    assert settings.prefect.api_url == "http://prefect-server:4200/api"


def prefect_containers() -> list[Container]:
    return [c for c in containers(base_documents()) if any(n.startswith("prefect-") for n in c.config_maps())]


@pytest.mark.parametrize("container", prefect_containers(), ids=lambda c: c.id)
def test_each_process_accepts_its_prefect_settings(container, monkeypatch):
    """Prefect's settings (and prefect-redis's) built from the container's environment take its values."""
    from prefect.settings import Settings as PrefectSettings

    env = container_environment(container)
    for name in list(os.environ):
        if name.startswith("PREFECT_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = PrefectSettings()
    assert str(settings.home) == env["PREFECT_HOME"]
    assert settings.api.url == env["PREFECT_API_URL"]
    if "PREFECT_REDIS_MESSAGING_URL" in env:
        from prefect_redis.client import RedisMessagingSettings

        assert RedisMessagingSettings().url == env["PREFECT_REDIS_MESSAGING_URL"]
        assert settings.server.database.connection_url is not None
    if "PREFECT_FLOWS_HEARTBEAT_FREQUENCY" in env:
        assert settings.flows.heartbeat_frequency == int(env["MARKETPLACE_WORKER__HEARTBEAT_SECONDS"])
