"""Probes point at paths the processes serve; grace periods cover each process's graceful shutdown."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.deploy.manifests import (
    BASE,
    OVERLAY,
    Container,
    base_documents,
    by_kind,
    containers,
    environment_names,
    expand,
    generated_config_maps,
    pod_spec,
)
from tests.support.services import free_port

MARGIN_SECONDS = 5  # past the last step of a shutdown, before the kubelet's SIGKILL


def servers() -> list[Container]:
    """The containers that listen on a port."""
    return [c for c in containers(base_documents()) if c.spec.get("ports")]


def test_every_http_server_is_probed_on_health_and_ready():
    """Liveness on the health path, readiness on the ready path, both on a port the container declares;
    a startup probe holds liveness off while the process imports and starts."""
    assert {c.spec["name"] for c in servers()} == {"api", "gateway", "prefect-server"}
    for container in servers():
        ports = {p["name"] for p in container.spec["ports"]}
        prefix = "/api" if container.spec["name"] == "prefect-server" else ""
        expected = {"livenessProbe": f"{prefix}/health", "readinessProbe": f"{prefix}/ready"}
        expected["startupProbe"] = expected["livenessProbe"]
        for probe, path in expected.items():
            get = container.spec[probe]["httpGet"]
            assert (get["path"], get["port"] in ports) == (path, True), f"{container.id} {probe}"


def _probe_paths(name: str) -> set[str]:
    (container,) = [c for c in servers() if c.spec["name"] == name]
    return {container.spec[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe", "startupProbe")}


def test_the_api_serves_its_probe_paths():
    from api.app import create_app

    container = next(c for c in servers() if c.spec["name"] == "api")
    assert container.argv[:2] == ["uvicorn", "api.app:app"]
    assert _probe_paths("api") <= set(create_app().openapi()["paths"])


PREFECT_PATHS = """
import json
from prefect.server.api.server import create_app
from starlette.routing import Mount
(api,) = [r.app for r in create_app(ignore_cache=True).routes if isinstance(r, Mount) and r.path == "/api"]
print(json.dumps(sorted(api.openapi()["paths"])))
"""


def test_the_prefect_server_serves_its_probe_paths():
    """Prefect's app mounts its API under /api, where /health and /ready (its database) are. Built in a
    process of its own: the server's app is not something the rest of the suite should share."""
    result = subprocess.run([sys.executable, "-c", PREFECT_PATHS], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    served = {f"/api{path}" for path in json.loads(result.stdout.splitlines()[-1])}
    assert _probe_paths("prefect-server") <= served


def test_the_gateway_serves_its_probe_paths(tmp_path):
    """A real `python -m gateway` process with the container's command, on SQLite, answering its probes."""
    if importlib.util.find_spec("gateway") is None:
        pytest.skip("the gateway (gateway/) is not on this branch yet")
    from storage.migrate import upgrade

    container = next(c for c in servers() if c.spec["name"] == "gateway")
    database = f"sqlite:///{tmp_path / 'marketplace.db'}"
    upgrade(database)
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "MARKETPLACE_DATABASE__URL": database,
        "MARKETPLACE_GATEWAY__HOST": "127.0.0.1",
        "MARKETPLACE_GATEWAY__PORT": str(port),
        "MARKETPLACE_GATEWAY__JOURNAL_DIR": str(tmp_path / "journal"),
    }
    argv = [sys.executable, *container.argv[1:]]
    assert container.argv[:3] == ["python", "-m", "gateway"]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        for path in sorted(_probe_paths("gateway")):
            assert _get_when_up(f"http://127.0.0.1:{port}{path}", process) == 200, path
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def _get_when_up(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the gateway exited with {process.returncode}"
        try:
            return httpx.get(url, timeout=2).status_code
        except httpx.TransportError:
            time.sleep(0.2)
    pytest.fail(f"nothing answered {url} within {timeout:g} s")


def _pre_stop_seconds(container: Container) -> int:
    command = container.spec.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return int(command[1]) if command[:1] == ["sleep"] else 0


def _grace(deployment: str) -> int:
    return int(pod_spec(by_kind(base_documents(), "Deployment")[deployment])["terminationGracePeriodSeconds"])


def _shutdown_seconds() -> int:
    maps = generated_config_maps(BASE, OVERLAY)
    return int(maps["marketplace-config"]["MARKETPLACE_API__SHUTDOWN_GRACE_SECONDS"])


def test_the_api_gets_its_shutdown_grace_and_a_margin():
    """The pause before SIGTERM, then uvicorn's graceful shutdown, set from the same setting."""
    api = next(c for c in servers() if c.spec["name"] == "api")
    env = environment_names(api, generated_config_maps(BASE, OVERLAY))
    argv = [expand(arg, env) for arg in api.argv]
    assert f"--timeout-graceful-shutdown={_shutdown_seconds()}" in argv
    assert _grace("marketplace-api") >= _pre_stop_seconds(api) + _shutdown_seconds() + MARGIN_SECONDS


def test_the_gateway_and_its_writer_get_their_shutdown():
    """The gateway finishes its calls (its grace comes from the API's setting), then its sidecar writer
    stops and drains the usage stream (at most DRAIN_SECONDS) into the database."""
    gateway = next(c for c in servers() if c.spec["name"] == "gateway")
    writer = next(c for c in containers(base_documents()) if c.spec["name"] == "usage-writer")
    assert writer.sidecar, "the writer must stop after the gateway: a native sidecar"
    drain = _writer_drain_seconds()
    needed = _pre_stop_seconds(gateway) + _shutdown_seconds() + drain + MARGIN_SECONDS
    assert _grace("marketplace-gateway") >= needed


def _writer_drain_seconds() -> float:
    if importlib.util.find_spec("gateway") is None:
        return 10.0  # gateway/writer.py DRAIN_SECONDS on the gateway's branch
    from gateway.writer import DRAIN_SECONDS

    return float(DRAIN_SECONDS)


def test_the_worker_gets_its_drain():
    """SIGTERM drains the warm worker for MARKETPLACE_WORKER__DRAIN_SECONDS, then it reports the runs
    still going as Crashed (one API call each) and exits: the kubelet's SIGKILL must come after that."""
    maps = generated_config_maps(BASE, OVERLAY)
    drain = int(maps["marketplace-config"]["MARKETPLACE_WORKER__DRAIN_SECONDS"])
    worker = next(c for c in containers(base_documents()) if c.spec["name"] == "worker")
    assert worker.argv[:3] == ["python", "-m", "deployments.warm_worker"]
    assert not any(arg.startswith("--drain-seconds") for arg in worker.argv), "one source: the setting"
    assert _grace("marketplace-worker") >= _pre_stop_seconds(worker) + drain + MARGIN_SECONDS


def test_the_relay_gets_its_flush():
    """A stop cuts the round's wait for acks to SHUTDOWN_FLUSH_SECONDS, then the producer flushes as long."""
    from notifications.relay import SHUTDOWN_FLUSH_SECONDS

    assert _grace("marketplace-relay") >= 2 * SHUTDOWN_FLUSH_SECONDS + MARGIN_SECONDS
