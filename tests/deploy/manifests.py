"""Reading deploy/: the manifest files, their rendering by kustomize, the pods and containers in them."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import PROJECT_ROOT
from tests.support.services import CI

DEPLOY = PROJECT_ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
BASE = KUBERNETES / "base"
OVERLAY = KUBERNETES / "overlays" / "production"
SECRETS_TEMPLATE = KUBERNETES / "secrets.example.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
WORKLOADS = {"Deployment", "Job", "StatefulSet", "DaemonSet"}
VARIABLE = re.compile(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)")  # $(NAME), not the escaped $$(NAME)
APPLY_FIRST = "llm-marketplace/apply-first"


def load_documents(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of a file (empty ones left out)."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest_files(folder: Path) -> list[Path]:
    """The Kubernetes objects of a folder: its YAML files except the kustomization."""
    return sorted(p for p in folder.rglob("*.yaml") if p.name != "kustomization.yaml")


def read_env_file(path: Path) -> dict[str, str]:
    """A kustomize `envs` file: KEY=VALUE lines, `#` comments and blank lines ignored."""
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


def kubectl() -> str:
    """kubectl, whose built-in kustomize renders the kustomizations; skip without it (fail in CI)."""
    found = shutil.which("kubectl")
    if found is None:
        message = "kubectl (with its built-in kustomize) is not installed: the kustomizations are not rendered"
        if CI:
            pytest.fail(message + " (CI=true: required)")
        pytest.skip(message)
    return found


@cache
def _render(folder: Path) -> str:
    result = subprocess.run(
        [kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {folder} failed:\n{result.stderr}"
    return result.stdout


def render(folder: Path) -> list[dict[str, Any]]:
    """The objects a kustomization produces (a fresh copy each call)."""
    return [doc for doc in yaml.safe_load_all(_render(folder)) if doc]


@dataclass(frozen=True)
class Container:
    """One container of a workload's pod, with what it reads its environment from."""

    workload: dict[str, Any]
    spec: dict[str, Any]
    init: bool

    @property
    def id(self) -> str:
        return f"{self.workload['kind']}/{self.workload['metadata']['name']}/{self.spec['name']}"

    @property
    def argv(self) -> list[str]:
        return [*self.spec.get("command", []), *self.spec.get("args", [])]

    @property
    def sidecar(self) -> bool:
        return self.init and self.spec.get("restartPolicy") == "Always"

    def config_maps(self) -> list[str]:
        return [ref["configMapRef"]["name"] for ref in self.spec.get("envFrom", []) if "configMapRef" in ref]

    def secrets(self) -> list[str]:
        return [ref["secretRef"]["name"] for ref in self.spec.get("envFrom", []) if "secretRef" in ref]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def workloads(docs: list[dict[str, Any]], kind: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in WORKLOADS and (kind is None or d["kind"] == kind)]


def containers(docs: list[dict[str, Any]]) -> Iterator[Container]:
    """Every container of every workload, init containers (and native sidecars) included."""
    for workload in workloads(docs):
        spec = pod_spec(workload)
        for container in spec.get("initContainers", []):
            yield Container(workload, container, init=True)
        for container in spec["containers"]:
            yield Container(workload, container, init=False)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def config_map_data(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Rendered ConfigMaps by name (with kustomize's hash suffix)."""
    return {name: doc.get("data", {}) for name, doc in by_kind(docs, "ConfigMap").items()}


def secret_templates() -> dict[str, dict[str, str]]:
    """The example Secrets: name → keys with their (placeholder) values."""
    return {doc["metadata"]["name"]: doc.get("stringData", {}) for doc in load_documents(SECRETS_TEMPLATE)}


def environment_names(container: Container, maps: dict[str, dict[str, str]]) -> dict[str, str]:
    """The variables a container gets, with their values (a Secret's keys with its placeholders),
    in the order the kubelet sets them: envFrom first, then env."""
    names: dict[str, str] = {}
    for name in container.config_maps():
        names.update(maps[name])
    for name in container.secrets():
        names.update(secret_templates()[name])
    for var in container.spec.get("env", []):
        names[var["name"]] = var.get("value", "")
    return names


def expand(text: str, values: dict[str, str]) -> str:
    """`$(NAME)` references replaced as the kubelet does (unknown ones left as they are)."""
    return VARIABLE.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A strategic merge of a patch that holds only maps and scalars (lists would need their merge keys)."""
    merged = dict(base)
    for key, value in patch.items():
        assert not isinstance(value, list), f"patch list at {key!r}: merge it with kustomize, not here"
        merged[key] = deep_merge(merged.get(key, {}), value) if isinstance(value, dict) else value
    return merged


def base_documents() -> list[dict[str, Any]]:
    """The base's objects as written (ConfigMaps come from its generator: see `generated_config_maps`)."""
    return [doc for path in manifest_files(BASE) for doc in load_documents(path)]


def generated_config_maps(*folders: Path) -> dict[str, dict[str, str]]:
    """The ConfigMaps the kustomizations' generators make, later folders merged over earlier ones
    (`behavior: merge`), by their names before kustomize adds its hash."""
    maps: dict[str, dict[str, str]] = {}
    for folder in folders:
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        for generator in kustomization.get("configMapGenerator", []):
            data = maps.setdefault(generator["name"], {})
            for env_file in generator.get("envs", []):
                data.update(read_env_file(folder / env_file))
    return maps
