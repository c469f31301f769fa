"""What runs on each host of the multi-host test, started inside that host's namespace.

The data host gets a PostgreSQL cluster of its own (initdb into a temporary directory, run as an
unprivileged user because PostgreSQL refuses root), a Redis and a Tansu broker; the edge host an
HAProxy (Debian's package); the control, app and worker hosts run the project's own stack parts
(deployments/stack.py), each part's process started through `ip netns exec` so it listens on,
and connects from, its host's address.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psycopg

from deployments.stack import Stack, StackConfig
from tests.multihost.network import SUBNET, Host

PG_BIN = Path("/usr/local/bin")
PG_PORT = 5432
REDIS_PORT = 6379
API_PORT = 8000
GATEWAY_PORT = 8080
PREFECT_PORT = 4200


def wait_tcp(host: str, port: int, what: str, timeout: float = 30, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{what} did not listen on {host}:{port} within {timeout} s")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL: this one process, by its pid."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Spawner:
    """Starts processes in a host's namespace with their output in `logs/<name>.log`; remembers them."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(
        self, host: Host, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                [*host.launcher(), *argv], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.procs.append((name, proc))
        return proc

    def stop_all(self) -> None:
        for _name, proc in reversed(self.procs):
            stop_process(proc)
        self.procs.clear()


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("no unprivileged user (postgres or nobody) to run PostgreSQL as")


class DataHost:
    """PostgreSQL (a private cluster), Redis and a Tansu broker on the data host's address."""

    def __init__(self, host: Host, workdir: Path, spawner: Spawner) -> None:
        self.host = host
        self.workdir = workdir
        self.spawner = spawner
        self.pgdata = workdir / "pgdata"

    def url(self, database: str, driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://root@{self.host.address}:{PG_PORT}/{database}"

    @property
    def redis_url(self) -> str:
        return f"redis://{self.host.address}:{REDIS_PORT}"

    def start_postgres(self, databases: list[str]) -> None:
        user = _unprivileged_user()
        as_user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
        self.pgdata.mkdir(parents=True)
        os.chown(self.pgdata, user.pw_uid, user.pw_gid)
        initdb = [*as_user, str(PG_BIN / "initdb"), "-D", str(self.pgdata), "-U", "root", "--auth=trust"]
        subprocess.run([*initdb, "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
        with (self.pgdata / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {SUBNET} trust\n")
        settings = {
            "listen_addresses": self.host.address,
            "port": str(PG_PORT),
            "unix_socket_directories": str(self.pgdata),
            "max_connections": "300",
            "fsync": "off",  # a throw-away cluster: durability across an OS crash is not under test
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "64MB",
        }
        argv = [*as_user, str(PG_BIN / "postgres"), "-D", str(self.pgdata)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        proc = self.spawner.spawn(self.host, "postgres", argv)
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(f"postgresql://root@{self.host.address}:{PG_PORT}/postgres", connect_timeout=2):
                    break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the data host's PostgreSQL did not start (see logs/postgres.log)") from None
                time.sleep(0.2)
        with psycopg.connect(f"postgresql://root@{self.host.address}:{PG_PORT}/postgres", autocommit=True) as conn:
            for database in databases:
                conn.execute(f'CREATE DATABASE "{database}"')

    def start_redis(self) -> None:
        argv = [shutil.which("redis-server") or "/usr/bin/redis-server", "--bind", self.host.address]
        argv += ["--port", str(REDIS_PORT), "--save", "", "--appendonly", "no", "--protected-mode", "no"]
        proc = self.spawner.spawn(self.host, "redis", argv)
        wait_tcp(self.host.address, REDIS_PORT, "redis", proc=proc)


HAPROXY_CONFIG = """\
global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    # A connection refused or reset before the request went out is safe to try again, on the other
    # server (redispatch): no request was sent. Nothing else is retried: a POST that reached a
    # process that died may have run there.
    retries 2
    retry-on conn-failure
    option redispatch 1
    option httplog
    log stdout format raw local0

frontend api
    bind {edge}:{api_port}
    default_backend api

frontend gateway
    bind {edge}:{gateway_port}
    default_backend gateway

backend api
    balance roundrobin
    option httpchk GET /ready
    default-server inter 500ms fall 2 rise 2
{api_servers}

backend gateway
    balance roundrobin
    option httpchk GET /health
    default-server inter 500ms fall 2 rise 2
{gateway_servers}
"""


def start_haproxy(edge: Host, apps: list[Host], workdir: Path, spawner: Spawner) -> subprocess.Popen[bytes]:
    """HAProxy on the edge host in front of each app host's API and gateway."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    config = HAPROXY_CONFIG.format(
        edge=edge.address,
        api_port=API_PORT,
        gateway_port=GATEWAY_PORT,
        api_servers="\n".join(f"    server {a.name} {a.address}:{API_PORT} check" for a in apps),
        gateway_servers="\n".join(f"    server {a.name} {a.address}:{GATEWAY_PORT} check" for a in apps),
    )
    path = workdir / "haproxy.cfg"
    path.write_text(config)
    checked = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    if checked.returncode != 0:
        raise RuntimeError(f"haproxy refused its configuration:\n{checked.stdout}{checked.stderr}")
    proc = spawner.spawn(edge, "haproxy", [binary, "-db", "-f", str(path)])
    wait_tcp(edge.address, API_PORT, "haproxy", proc=proc)
    return proc


class HostStack(Stack):
    """The project's stack runner for the parts of one host: each part starts in the host's
    namespace; the one-off commands (migrations, deploy) run from the test process."""

    def __init__(self, host: Host, config: StackConfig) -> None:
        self.host = host
        super().__init__(config)
        self.launcher = host.launcher()

    def kill_all(self) -> None:
        """SIGKILL every part (the whole host lost); no shutdown runs."""
        for _name, proc in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        for _name, proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
