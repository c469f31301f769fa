"""Seven hosts in network namespaces, each running only its own parts of the marketplace.

    data     PostgreSQL (a private cluster), Redis, Tansu (Kafka protocol)
    control  Prefect's API server, and Prefect's background services as a second process
    edge     HAProxy in front of the two app hosts
    app1/2   the API, a gateway and the outbox relay
    worker1/2  a warm worker each

The test process is the client (through the edge host only) and serves the fake providers on its
own end of the segment. The fixture removes everything it made, in a `finally`, even when the
start fails: processes by pid, the namespaces, the temporary directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.plans import Plan
from deployments.stack import StackConfig
from storage.database import reset_engine
from storage.migrate import upgrade
from tests.multihost.hosts import (
    API_PORT,
    GATEWAY_PORT,
    PREFECT_PORT,
    DataHost,
    HostStack,
    Spawner,
    start_haproxy,
)
from tests.multihost.network import CLIENT_ADDRESS, Network, why_unavailable
from tests.support.gateway import add_service, consumer_with_key, set_credential
from tests.support.kafka import TansuBroker, tansu_binary
from tests.support.provider import FakeProvider
from tests.support.services import CI
from tests.support.stack import pause_deployments

HOSTS = ["data", "control", "edge", "app1", "app2", "worker1", "worker2"]
HEARTBEAT = 30  # Prefect's shortest heartbeat interval
CRASH_AFTER = 35  # no heartbeat for this long: the run is marked Crashed (as the e2e stack)
KAFKA_PORT = 9092
WORKER_THREADS = 6
PUBLISH_DELAY_MS = 700  # each call to the publishing provider: endpoint tests take a few seconds


@dataclass
class Cluster:
    network: Network
    workdir: Path
    data: DataHost
    broker: TansuBroker
    control: HostStack
    apps: dict[str, HostStack]
    workers: dict[str, HostStack]
    publish_provider: FakeProvider
    chat_provider: FakeProvider
    app_db: str
    gateway_token: str = ""
    service_id: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def edge(self) -> str:
        return self.network.hosts["edge"].address

    @property
    def api_url(self) -> str:
        return f"http://{self.edge}:{API_PORT}"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.edge}:{GATEWAY_PORT}"

    def ledger(self, worker: str) -> Path:
        return self.workers[worker].config.prefect_home / "workers" / "worker.json"


def _require_tools() -> None:
    reason = why_unavailable()
    if reason is not None:  # in CI too: the issue allows a skip only here, with the reason
        pytest.skip(f"network namespaces cannot be made here: {reason}")
    missing = [tool for tool in ("haproxy", "redis-server", "setpriv") if shutil.which(tool) is None]
    missing += [str(p) for p in (Path("/usr/local/bin/initdb"), Path("/usr/local/bin/postgres")) if not p.exists()]
    if missing:
        message = f"the multi-host test needs {', '.join(missing)} (apt-get install haproxy; .ci/run installs it)"
        if CI:
            pytest.fail(message + " (CI=true: required)")
        pytest.skip(message)
    tansu_binary()  # skips, or fails in CI, when the broker is missing


def _environment(cluster_db: str, data: DataHost, broker: str, workdir: Path, control: str) -> dict[str, str]:
    prefect_api = f"http://{control}:{PREFECT_PORT}/api"
    return {
        "MARKETPLACE_DATABASE__URL": cluster_db,
        "MARKETPLACE_CACHE__REDIS_URL": f"{data.redis_url}/1",
        "MARKETPLACE_GATEWAY__REDIS_URL": f"{data.redis_url}/1",
        "MARKETPLACE_PREFECT__REDIS_URL": f"{data.redis_url}/0",
        "MARKETPLACE_KAFKA__BOOTSTRAP_SERVERS": broker,
        "MARKETPLACE_KAFKA__POLL_INTERVAL_SECONDS": "0.2",
        "MARKETPLACE_ENDPOINT_TESTS__ALLOW_INSECURE_ENDPOINTS": "true",
        "MARKETPLACE_ENDPOINT_TESTS__LATENCY_SAMPLES": "5",  # 3.5 s of endpoint tests: the loss lands in them
        "MARKETPLACE_RATE_LIMIT__PUBLISH_LIMIT": "100000",
        "MARKETPLACE_WORKER__MODE": "warm",
        # Few slots each: a burst is shared by both workers (with 32, the first to wake takes it all).
        "MARKETPLACE_WORKER__THREADS": str(WORKER_THREADS),
        "MARKETPLACE_WORKER__HEARTBEAT_SECONDS": str(HEARTBEAT),
        "MARKETPLACE_WORKER__CRASH_AFTER_SECONDS": str(CRASH_AFTER),
        "MARKETPLACE_GATEWAY__DIRECTORY_REFRESH_SECONDS": "0.5",
        "MARKETPLACE_USAGE__IDLE_CLAIM_SECONDS": "2",  # a dead gateway's unwritten usage: claimed by the other
        "MARKETPLACE_USAGE__RETRY_SECONDS": "0.2",
        # Every host reaches Prefect on the control host (the stack runner would say its own address).
        "PREFECT_API_URL": prefect_api,
        "PREFECT_UI_API_URL": prefect_api,
        "MARKETPLACE_PREFECT__API_URL": prefect_api,
        "MARKETPLACE_PREFECT__UI_URL": f"http://{control}:{PREFECT_PORT}",
    }


def _stack(network: Network, name: str, workdir: Path, env: dict[str, str], prefect_db: str) -> HostStack:
    host = network.hosts[name]
    config = StackConfig(
        api_port=API_PORT,
        gateway_port=GATEWAY_PORT,
        prefect_port=PREFECT_PORT,
        host=host.address,
        prefect_home=workdir / name / "prefect-home",
        prefect_database_url=prefect_db,
        work_pool="multihost",
        log_dir=workdir / "logs" / name,
        extra_env={**env, "MARKETPLACE_GATEWAY__JOURNAL_DIR": str(workdir / name / "journal")},
        stop_timeout_seconds=10,
        api_shutdown_grace_seconds=2,
    )
    if name == "control":  # the Prefect server listens on its own address
        config.extra_env["PREFECT_SERVER_API_HOST"] = host.address
    return HostStack(host, config)


@pytest.fixture(scope="package")
def cluster(monkeypatch_package: pytest.MonkeyPatch) -> Iterator[Cluster]:
    _require_tools()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="multihost-"))
    workdir.chmod(0o755)  # PostgreSQL runs as an unprivileged user and needs to reach its directory
    network = Network()
    spawner = Spawner(workdir / "logs")
    stacks: list[HostStack] = []
    broker: TansuBroker | None = None
    providers: list[FakeProvider] = []
    try:
        network.create(HOSTS)
        data = DataHost(network.hosts["data"], workdir, spawner)
        data.start_postgres(["marketplace", "prefect"])
        data.start_redis()
        broker = TansuBroker(
            KAFKA_PORT,
            workdir / "logs" / "tansu.log",
            host=data.host.address,
            launcher=data.host.launcher(),
        )
        broker.start(timeout=30)
        app_db = data.url("marketplace")
        prefect_db = data.url("prefect", "asyncpg")
        upgrade(app_db)
        monkeypatch_package.setenv("MARKETPLACE_DATABASE__URL", app_db)
        reset_engine()
        control_address = network.hosts["control"].address
        env = _environment(app_db, data, broker.bootstrap_servers, workdir, control_address)
        control = _stack(network, "control", workdir, env, prefect_db)
        stacks.append(control)
        control.start_prefect_server()
        control.deploy()
        pause_deployments(control, ["monitor-services"])
        # Over TLS: the https-required policy lets plain http through only on loopback.
        publish_provider = FakeProvider("slow", delay_ms=PUBLISH_DELAY_MS, host=CLIENT_ADDRESS, tls=True).start()
        chat_provider = FakeProvider(host=CLIENT_ADDRESS).start()
        providers += [publish_provider, chat_provider]
        service_id = add_service(chat_provider.url, name="multihost-chat")
        set_credential(service_id, "upstream-key-of-acme")  # the fake provider refuses calls without one
        _key_id, token = consumer_with_key(
            "multihost-consumer", [service_id], Plan(name="mh", requests_per_minute=10**6)
        )
        assert publish_provider.ca_path is not None
        worker_env = {**env, "SSL_CERT_FILE": str(publish_provider.ca_path)}  # the endpoint tests trust it
        workers = {name: _stack(network, name, workdir, worker_env, prefect_db) for name in ("worker1", "worker2")}
        apps = {name: _stack(network, name, workdir, env, prefect_db) for name in ("app1", "app2")}
        stacks += [*workers.values(), *apps.values()]
        for worker in workers.values():
            worker.start_worker()
        apps["app1"].start_relay()  # first: the relay that holds the lock when app1 is lost
        with ThreadPoolExecutor(4) as pool:
            for started_part in [pool.submit(app.start_api) for app in apps.values()] + [
                pool.submit(app.start_gateway) for app in apps.values()
            ]:
                started_part.result()
        apps["app2"].start_relay()
        start_haproxy(network.hosts["edge"], [network.hosts[a] for a in apps], workdir, spawner)
        c = Cluster(network, workdir, data, broker, control, apps, workers, publish_provider, chat_provider, app_db)
        c.gateway_token, c.service_id = token, service_id
        c.timings["start_seconds"] = time.monotonic() - started
        yield c
    finally:
        for stack in stacks:  # shown by pytest only when the test failed
            print(stack.report(25))
        with ThreadPoolExecutor(max_workers=max(1, len(stacks))) as pool:  # hosts stop side by side
            list(pool.map(lambda stack: stack.stop(), stacks))
        spawner.stop_all()
        if broker is not None:
            broker.stop()
        for provider in providers:
            provider.stop()
        network.remove()
        reset_engine()
        if not os.environ.get("MULTIHOST_KEEP_WORKDIR"):  # set it to read every log after a run
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="package")
def monkeypatch_package() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch
