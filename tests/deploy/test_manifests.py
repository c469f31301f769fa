"""deploy/kubernetes: valid for the stated Kubernetes versions, and consistent with the platform.

Schemas come from kubernetes-validate (offline, strict: unknown fields are errors). The base's files
are validated one by one, the overlay's patches merged onto what they patch, and both
kustomizations as `kubectl kustomize` renders them (kustomize built into kubectl).
"""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.manifests import (
    APPLY_FIRST,
    BASE,
    OVERLAY,
    SECRETS_TEMPLATE,
    VARIABLE,
    base_documents,
    by_kind,
    config_map_data,
    containers,
    deep_merge,
    environment_names,
    generated_config_maps,
    load_documents,
    manifest_files,
    pod_spec,
    render,
    secret_templates,
    workloads,
)

# The oldest Kubernetes the manifests are for (native sidecars, `ContainerResource` autoscaling and
# policy/v1 budgets are all GA there) and the newest whose schemas the validator ships.
KUBERNETES_VERSIONS = ["1.33.0", kubernetes_validate.latest_version()]
RENDERED = {"base": BASE, "production": OVERLAY}


def validate(doc: dict[str, Any], version: str) -> None:
    where = f"{doc['kind']}/{doc['metadata'].get('name')} for Kubernetes {version}"
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{where}: {exc.message} at {'.'.join(map(str, exc.path))}")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", [*manifest_files(BASE), SECRETS_TEMPLATE], ids=lambda p: p.name)
def test_every_base_file_is_valid(path, version):
    for doc in load_documents(path):
        validate(doc, version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_overlay_patch_is_valid_on_what_it_patches(version):
    """Without kustomize: each patch merged onto the base object of the same kind and name."""
    base = {(d["kind"], d["metadata"]["name"]): d for d in base_documents()}
    patches = manifest_files(OVERLAY / "patches")
    assert patches
    for path in patches:
        for patch in load_documents(path):
            target = base.get((patch["kind"], patch["metadata"]["name"]))
            assert target is not None, f"{path.name} patches {patch['kind']}/{patch['metadata']['name']}: not in base"
            validate(deep_merge(target, patch), version)
    for doc in load_documents(OVERLAY / "namespace.yaml"):
        validate(doc, version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", RENDERED)
def test_rendered_kustomization_is_valid(name, version):
    docs = render(RENDERED[name])
    assert {"Deployment", "Job", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= {
        d["kind"] for d in docs
    }
    for doc in docs:
        validate(doc, version)


def test_the_base_kustomization_lists_every_file():
    import yaml

    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in manifest_files(BASE)}


def test_no_secret_is_part_of_a_kustomization():
    """Secrets are created apart (from the template): applying an overlay never overwrites them."""
    for name, folder in RENDERED.items():
        assert not by_kind(render(folder), "Secret"), f"{name} renders a Secret"


def test_the_secret_template_holds_no_values():
    for name, keys in secret_templates().items():
        assert keys, name
        assert all(value == "" for value in keys.values()), f"{name} holds values"


CREDENTIALS_IN_URL = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


def test_secrets_are_never_inline():
    """Secret settings reach containers only from Secrets: not from ConfigMaps nor literal values,
    and no literal value carries credentials. Every Secret a pod names is in the template."""
    secret_keys = {key for keys in secret_templates().values() for key in keys}
    maps = generated_config_maps(BASE, OVERLAY)
    for name, data in maps.items():
        assert not secret_keys & set(data), f"ConfigMap {name} sets secrets {secret_keys & set(data)}"
        for key, value in data.items():
            assert not CREDENTIALS_IN_URL.search(value), f"{name}: {key} has credentials"
            assert not re.search(r"SECRET|PASSWORD|PEPPER|ENCRYPTION_KEY|TOKEN", key), f"{name}: {key}"
    templates = secret_templates()
    for container in containers(base_documents()):
        for var in container.spec.get("env", []):
            assert var["name"] not in secret_keys, f"{container.id}: {var['name']} set inline"
            assert not CREDENTIALS_IN_URL.search(var.get("value", "")), f"{container.id}: {var['name']}"
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            assert ref is None or ref["key"] in templates.get(ref["name"], {}), f"{container.id}: {ref}"
        for name in container.secrets():
            assert name in templates, f"{container.id} reads Secret {name}, which the template lacks"
    for workload in workloads(base_documents()):
        for volume in pod_spec(workload).get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in templates, volume


def test_secret_settings_come_only_from_secrets():
    """Every setting that is a secret (SecretStr, or a URL that carries a password) is a key of a Secret."""
    secret_keys = {key for keys in secret_templates().values() for key in keys}
    required = {
        "MARKETPLACE_DATABASE__URL",
        "MARKETPLACE_CACHE__REDIS_URL",
        "MARKETPLACE_WEBHOOKS__SECRET",
        "PREFECT_API_DATABASE_CONNECTION_URL",
        "PREFECT_REDIS_MESSAGING_URL",
        "PREFECT_SERVER_DOCKET_URL",
    }
    assert required <= secret_keys


def _reference_problems(docs: list[dict[str, Any]], maps: dict[str, dict[str, str]]) -> list[str]:
    problems = []
    for container in containers(docs):
        env = environment_names(container, maps)
        texts = [*container.argv, *(v.get("value", "") for v in container.spec.get("env", []))]
        for text in texts:
            problems += [f"{container.id}: $({m}) is not set" for m in VARIABLE.findall(text) if m not in env]
    return problems


def test_every_variable_reference_resolves():
    """`$(NAME)` in a command, its arguments or a value: the kubelet leaves an unknown one as it is."""
    maps = generated_config_maps(BASE, OVERLAY)
    assert _reference_problems(base_documents(), maps) == []


def test_workloads_read_only_config_maps_the_kustomization_makes():
    maps = generated_config_maps(BASE)
    for container in containers(base_documents()):
        assert set(container.config_maps()) <= set(maps), container.id


@pytest.mark.parametrize("name", RENDERED)
def test_every_deployment_has_resources_a_budget_and_a_grace_period(name):
    docs = render(RENDERED[name])
    budgets = by_kind(docs, "PodDisruptionBudget").values()
    for deployment in workloads(docs, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(matching) == 1, f"{deployment['metadata']['name']}: {len(matching)} disruption budgets"
        assert "terminationGracePeriodSeconds" in pod_spec(deployment), deployment["metadata"]["name"]
    for container in containers(docs):
        resources = container.spec.get("resources", {})
        assert {"cpu", "memory"} <= set(resources.get("requests", {})), container.id
        assert "memory" in resources.get("limits", {}), container.id


@pytest.mark.parametrize("name", RENDERED)
def test_the_api_and_the_gateway_scale_on_cpu(name):
    docs = render(RENDERED[name])
    autoscalers = {a["spec"]["scaleTargetRef"]["name"]: a for a in by_kind(docs, "HorizontalPodAutoscaler").values()}
    deployments = by_kind(docs, "Deployment")
    for target, container in [("marketplace-api", "api"), ("marketplace-gateway", "gateway")]:
        hpa = autoscalers[target]["spec"]
        assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
        metric = hpa["metrics"][0]["containerResource"]
        assert (metric["name"], metric["container"]) == ("cpu", container)
        assert "replicas" not in deployments[target]["spec"], f"{target}: replicas would fight the autoscaler"
        names = [c["name"] for c in pod_spec(deployments[target])["containers"]]
        assert container in names


@pytest.mark.parametrize("name", RENDERED)
def test_pods_run_restricted(name):
    """The Pod Security "restricted" profile, a read-only root filesystem and no Kubernetes API token."""
    docs = render(RENDERED[name])
    for workload in workloads(docs):
        spec = pod_spec(workload)
        security = spec["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] > 0, workload["metadata"]["name"]
        assert security["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        assert spec["serviceAccountName"] == "marketplace"
    for container in containers(docs):
        security = container.spec["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, container.id
        assert security["readOnlyRootFilesystem"] is True, container.id
        assert security["capabilities"] == {"drop": ["ALL"]}, container.id
        mounts = {m["mountPath"] for m in container.spec.get("volumeMounts", [])}
        assert "/tmp" in mounts, f"{container.id}: no writable /tmp"


def test_one_image_for_every_process():
    images = {c.spec["image"] for c in containers(base_documents())}
    assert images == {"llm-marketplace"}
    rendered = {c.spec["image"] for c in containers(render(OVERLAY))}
    assert len(rendered) == 1
    (image,) = rendered
    assert re.fullmatch(r"[\w./-]+(:[\w.-]+|@sha256:[0-9a-f]{64})", image) and not image.endswith(":latest"), image


def test_writable_paths_are_volumes():
    """What a process writes is on a volume of its pod: PREFECT_HOME, the ledger, the journal, results."""
    maps = generated_config_maps(BASE, OVERLAY)
    writes = {
        "PREFECT_HOME",
        "PREFECT_LOCAL_STORAGE_PATH",
        "PREFECT_SERVER_UI_STATIC_DIRECTORY",
        "MARKETPLACE_GATEWAY__JOURNAL_DIR",
    }
    for container in containers(base_documents()):
        env = environment_names(container, maps)
        mounts = [m["mountPath"] for m in container.spec.get("volumeMounts", [])]
        paths = [env[name] for name in writes if name in env]
        paths += [arg.split("=", 1)[1] for arg in container.argv if arg.startswith("--ledger=")]
        for path in paths:
            assert any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts), f"{container.id}: {path}"


def test_worker_pods_share_the_result_storage():
    worker = by_kind(base_documents(), "Deployment")["marketplace-worker"]
    claims = [
        v["persistentVolumeClaim"]["claimName"] for v in pod_spec(worker)["volumes"] if "persistentVolumeClaim" in v
    ]
    pvc = by_kind(base_documents(), "PersistentVolumeClaim")[claims[0]]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_migrations_apply_first_on_their_own():
    """`kubectl apply -l llm-marketplace/apply-first=true` brings the migrations Job and all it reads,
    and nothing that would start before the databases are migrated."""
    docs = render(OVERLAY)
    first = [d for d in docs if d["metadata"].get("labels", {}).get(APPLY_FIRST) == "true"]
    kinds = sorted(d["kind"] for d in first)
    assert kinds == ["ConfigMap", "ConfigMap", "ConfigMap", "Job", "Namespace", "ServiceAccount"]
    (job,) = [d for d in first if d["kind"] == "Job"]
    assert job["metadata"]["name"] == "marketplace-migrate"
    present = {(d["kind"], d["metadata"]["name"]) for d in first}
    for container in containers([job]):
        assert all(("ConfigMap", name) in present for name in container.config_maps()), container.id
        assert set(container.secrets()) <= set(secret_templates())
    assert ("ServiceAccount", pod_spec(job)["serviceAccountName"]) in present
    argvs = [c.argv for c in containers([job])]
    assert ["prefect", "server", "database", "upgrade", "-y"] in argvs
    assert ["python", "-m", "storage.migrate"] in argvs


def test_prefect_servers_do_not_migrate_on_start():
    """Several server processes starting at once would race on the schema: the Job migrates once."""
    maps = generated_config_maps(BASE, OVERLAY)
    assert maps["prefect-server-config"]["PREFECT_API_DATABASE_MIGRATE_ON_START"] == "false"


def test_the_overlay_sets_what_base_leaves_to_it():
    docs = render(OVERLAY)
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"marketplace"}
    maps = {name.rsplit("-", 1)[0]: data for name, data in config_map_data(docs).items()}
    assert maps["marketplace-config"]["MARKETPLACE_API__PUBLIC_URL"].startswith("https://")
    assert maps["prefect-server-config"]["PREFECT_UI_API_URL"].startswith("https://")
