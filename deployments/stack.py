"""The whole stack as child processes: Prefect server, work pool + deployments, worker, API, gateway.

`python -m deployments.stack` is what `make up` runs; the end-to-end tests and the benchmarks
start the same stack on free ports with a PostgreSQL-backed Prefect server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import httpx

from core.logging import configure_logging, resolve_format, write_prefect_logging_config
from core.settings import PROJECT_ROOT, Environment, get_settings
from deployments.stack_settings import StackSettings
from storage.migrate import upgrade

log = logging.getLogger("marketplace.stack")
BIN = Path(sys.executable).parent
STOP_MARGIN_SECONDS = 5.0  # past the API's own grace period before SIGKILL
RESTART_FIRST_SECONDS = 1.0  # a dead part's first restart waits this long; each further one doubles
RESTART_MAX_SECONDS = 30.0
RESTART_RESET_SECONDS = 60.0  # a part that ran this long before dying starts over at the first delay
# `prefect` for the long-running Prefect processes: their imports out of the collector's walks.
PREFECT_FROZEN = [sys.executable, "-m", "deployments.prefect_cli"]


def _api_grace() -> float:
    return get_settings().api.shutdown_grace_seconds


def uvicorn_argv(app: str, host: str, port: int, grace_seconds: float, *, factory: bool = False) -> list[str]:
    """How the API is served: on SIGTERM/SIGINT uvicorn stops accepting connections and gives
    in-flight requests `grace_seconds` to finish. Access lines come from our middleware."""
    argv = [str(BIN / "uvicorn"), app, "--host", host, "--port", str(port)]
    argv += ["--timeout-graceful-shutdown", f"{grace_seconds:g}", "--no-access-log"]
    return [*argv, "--factory"] if factory else argv


@dataclass
class StackConfig:
    """Where each part listens and what it stores its state in."""

    api_port: int = 8000
    prefect_port: int = 4200
    gateway_port: int | None = 8080  # None: no gateway
    host: str = "127.0.0.1"
    prefect_home: Path = PROJECT_ROOT / ".prefect"
    prefect_database_url: str | None = None  # None: Prefect's own SQLite under prefect_home
    work_pool: str = "marketplace"
    # None: from settings (MARKETPLACE_WORKER__*), where extra_env may override them
    worker_mode: str | None = None
    worker_query_seconds: float | None = None
    # None: from settings (MARKETPLACE_PREFECT__REDIS_URL). Set: Prefect's messaging on Redis, the
    # API server and the background services in two processes (see _prefect_on_redis).
    prefect_redis_url: str | None = None
    log_dir: Path | None = None  # None: children write to this terminal
    extra_env: dict[str, str] = field(default_factory=dict)
    api_shutdown_grace_seconds: float = field(default_factory=_api_grace)
    stop_timeout_seconds: float = 30.0  # SIGTERM to SIGKILL for the other parts

    @property
    def prefect_api_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}/api"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.gateway_port}"


@dataclass
class Part:
    """One long-running child: how to start it again, and how its restarts went."""

    name: str
    argv: list[str]
    niceness: int
    proc: subprocess.Popen[bytes]
    started_at: float
    restarts: int = 0
    restart_due: float | None = None  # monotonic time of the pending restart, once its death was seen


class Stack:
    """Starts the parts in dependency order, restarts a part that dies (`supervise`), and stops them in
    reverse, by their process ids."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.env = self._environment()
        self.parts: list[Part] = []
        # Put before every part's command (e.g. `ip netns exec <host>`: the multi-host test runs
        # each host's parts in that host's network namespace); one-off commands run without it.
        self.launcher: list[str] = []

    @property
    def processes(self) -> list[tuple[str, subprocess.Popen[bytes]]]:
        """Each part's current process, in start order."""
        return [(part.name, part.proc) for part in self.parts]

    def _environment(self) -> dict[str, str]:
        c = self.config
        env = dict(os.environ)
        env.update(
            {
                "PREFECT_HOME": str(c.prefect_home),
                "PREFECT_API_URL": c.prefect_api_url,
                "PREFECT_UI_API_URL": c.prefect_api_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_API_HOST": c.host,
                "PREFECT_SERVER_API_PORT": str(c.prefect_port),
                "MARKETPLACE_PREFECT__API_URL": c.prefect_api_url,
                "MARKETPLACE_PREFECT__UI_URL": f"http://{c.host}:{c.prefect_port}",
                "MARKETPLACE_API__PUBLIC_URL": c.api_url,
                "MARKETPLACE_PROJECT_DIR": str(PROJECT_ROOT),
                "MARKETPLACE_WORK_POOL": c.work_pool,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
            }
        )
        if c.prefect_database_url:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = c.prefect_database_url
        else:  # Prefect on its own SQLite takes one create at a time (api/run_starter.py)
            env.setdefault("MARKETPLACE_PREFECT__START_CONCURRENCY", "1")
        if c.gateway_port is not None:
            env.update({"MARKETPLACE_GATEWAY__PORT": str(c.gateway_port), "MARKETPLACE_GATEWAY__HOST": c.host})
        env.update(c.extra_env)
        self.local = local = StackSettings.from_environment(env)
        worker = get_settings().worker
        self.worker_mode = env.get("MARKETPLACE_WORKER__MODE") or c.worker_mode or worker.mode
        query_seconds = env.get("MARKETPLACE_WORKER__QUERY_SECONDS") or c.worker_query_seconds or worker.query_seconds
        env["PREFECT_WORKER_QUERY_SECONDS"] = str(query_seconds)
        # Runs send heartbeats, so a run whose process died is seen (see deployments/automations.py).
        heartbeat = env.get("MARKETPLACE_WORKER__HEARTBEAT_SECONDS") or str(worker.heartbeat_seconds)
        env.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", heartbeat)
        self.crash_after_seconds = env.get("MARKETPLACE_WORKER__CRASH_AFTER_SECONDS") or str(worker.crash_after_seconds)
        self.worker_drain_seconds = float(env.get("MARKETPLACE_WORKER__DRAIN_SECONDS") or worker.drain_seconds)
        # Scheduled runs queued for the worker's slots in a burst are not "late" (see StackSettings).
        env.setdefault("PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS", f"{local.prefect_late_after_seconds:g}")
        for name, value in EVENT_BATCHES.items():  # an operator's own values win
            env.setdefault(name, value)
        self.prefect_redis_url = c.prefect_redis_url or env.get("MARKETPLACE_PREFECT__REDIS_URL") or None
        if self.prefect_redis_url:
            env.update(_prefect_on_redis(self.prefect_redis_url))
        self._json_logs_for_prefect(env)
        return env

    def _json_logs_for_prefect(self, env: dict[str, str]) -> None:
        """With JSON logs, Prefect's processes (server, worker, flow runs) write JSON too: their
        console handler gets our formatter; the handler shipping run logs to the UI is unchanged."""
        development = env.get("MARKETPLACE_ENVIRONMENT", "development") == "development"
        if resolve_format(env.get("MARKETPLACE_LOG_FORMAT"), development) != "json":
            return
        if "PREFECT_LOGGING_SETTINGS_PATH" not in env:
            path = self.config.prefect_home / "logging.yml"
            write_prefect_logging_config(path, env.get("MARKETPLACE_LOG_LEVEL", "INFO"))
            env["PREFECT_LOGGING_SETTINGS_PATH"] = str(path)

    def start(self) -> None:
        """Bring everything up; raises if a part does not become healthy in time."""
        self.start_prefect_server()
        self.migrate()
        self.deploy()
        self.start_worker()
        if self.env.get("MARKETPLACE_KAFKA__BOOTSTRAP_SERVERS"):
            self.start_relay()
        self.start_api()
        if self.config.gateway_port is not None:
            self.start_gateway()

    def start_prefect_server(self) -> None:
        """The Prefect server: one process, or with messaging on Redis, the API server (UI included)
        plus its background services in a second process at a lower CPU priority."""
        c = self.config
        c.prefect_home.mkdir(parents=True, exist_ok=True)
        local = self.local
        argv = [*PREFECT_FROZEN, "server", "start", "--host", c.host, "--port", str(c.prefect_port)]
        split = bool(self.prefect_redis_url)
        if split:  # several processes: migrate once, before any starts (Prefect's guide to scaling)
            self._run([str(BIN / "prefect"), "server", "database", "upgrade", "-y"])
            argv += ["--no-services", "--workers", str(local.prefect_server_workers)]
        self._spawn("prefect-server", argv, niceness=local.prefect_server_nice)
        self._wait_http(f"{c.prefect_api_url}/health", "prefect-server", timeout=180)
        if split:
            services = [*PREFECT_FROZEN, "server", "services", "start"]
            self._spawn("prefect-services", services, niceness=local.prefect_services_nice)

    def migrate(self) -> None:
        """Bring the marketplace database to the newest schema."""
        upgrade(self.env.get("MARKETPLACE_DATABASE__URL"))

    def deploy(self) -> None:
        """Create the work pool (of the worker mode's type) and apply the deployments of prefect.yaml."""
        pool = self.config.work_pool
        if self.worker_mode == "warm":
            self._run([sys.executable, "-m", "deployments.warm_worker", "--pool", pool, "--create-pool"])
        else:
            self._run([str(BIN / "prefect"), "work-pool", "create", pool, "--type", "process", "--overwrite"])
        self._run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"])
        self._run([sys.executable, "-m", "deployments.automations", "--within", self.crash_after_seconds])

    def start_worker(self) -> None:
        """The warm worker (flow runs in threads of one process) or Prefect's process worker."""
        pool = self.config.work_pool
        if self.worker_mode == "warm":
            for n in range(self.local.worker_processes):  # the first is "worker"; more are "worker-2", ...
                self.start_warm_worker("worker" if n == 0 else f"worker-{n + 1}")
        else:
            argv = [str(BIN / "prefect"), "worker", "start", "--pool", pool]
            self._spawn("worker", argv, niceness=self.local.worker_nice)

    def start_warm_worker(self, name: str) -> None:
        """One more warm worker process (another worker host, on this one), named `name`."""
        threads = self.env.get("MARKETPLACE_WORKER__THREADS") or str(get_settings().worker.threads)
        argv = [sys.executable, "-m", "deployments.warm_worker", "--pool", self.config.work_pool, "--threads", threads]
        ledger = self.config.prefect_home / "workers" / f"{name}.json"  # what a restart reports crashed
        self._spawn(name, [*argv, "--ledger", str(ledger)], niceness=self.local.worker_nice)

    def start_relay(self) -> None:
        """The outbox relay to Kafka: one process, running as long as the stack (SIGTERM flushes it)."""
        self._spawn("relay", [sys.executable, "-m", "notifications.relay"])

    def start_api(self) -> None:
        c = self.config
        self._spawn("api", uvicorn_argv("api.app:app", c.host, c.api_port, c.api_shutdown_grace_seconds))
        self._wait_http(f"{c.api_url}/ready", "api", timeout=60)

    def start_gateway(self, name: str = "gateway") -> None:
        """The data plane: a process of its own on its own port (more processes scale it out)."""
        c = self.config
        self._spawn(name, [sys.executable, "-m", "gateway"])  # port and host: in the environment
        self._wait_http(f"{c.gateway_url}/health", name, timeout=60)

    def stop(self) -> None:
        """Stop the parts newest first, each before the next: the API finishes its requests,
        the worker lets go of the server, the server goes last. SIGTERM, then SIGKILL after a
        grace period (the API's is its shutdown grace plus a margin)."""
        for name, proc in reversed(self.processes):
            if proc.poll() is None:
                log.info("stopping %s (pid %s)", name, proc.pid)
                proc.terminate()
            timeout = self._stop_timeout(name)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %s) ignored SIGTERM for %g s; killing it", name, proc.pid, timeout)
                proc.kill()
                proc.wait()
        self.parts.clear()

    def stop_part(self, name: str) -> None:
        """Stop one part (SIGTERM, then SIGKILL after its stop timeout) and forget it: no restart."""
        part = next(p for p in self.parts if p.name == name)
        self.parts.remove(part)
        part.proc.terminate()
        try:
            part.proc.wait(timeout=self._stop_timeout(name))
        except subprocess.TimeoutExpired:
            part.proc.kill()
            part.proc.wait()

    def _stop_timeout(self, name: str) -> float:
        if name in ("api", "gateway"):  # both finish in-flight calls (the gateway its usage hand-off too)
            return self.config.api_shutdown_grace_seconds + STOP_MARGIN_SECONDS
        if name.startswith("worker") and self.worker_mode == "warm":  # it drains its runs first
            return max(self.config.stop_timeout_seconds, self.worker_drain_seconds + STOP_MARGIN_SECONDS)
        return self.config.stop_timeout_seconds

    def pid_of(self, name: str) -> int:
        """The current process of that part (a new one after a restart)."""
        return next(part.proc.pid for part in self.parts if part.name == name)

    def supervise(self, now: float | None = None) -> None:
        """Restart every part that died, after a backoff (1 s, doubling to 30 s; back to 1 s once a part
        has run for a minute). Called about twice a second by the stack runner; only Ctrl-C stops it."""
        now = time.monotonic() if now is None else now
        for part in self.parts:
            code = part.proc.poll()
            if code is None:
                continue
            if part.restart_due is None:
                uptime = now - part.started_at
                if uptime >= RESTART_RESET_SECONDS:
                    part.restarts = 0
                delay = min(RESTART_MAX_SECONDS, RESTART_FIRST_SECONDS * 2**part.restarts)
                part.restart_due = now + delay
                log.error(
                    "%s (pid %s) exited with code %s after %.0f s; restarting it in %g s",
                    part.name,
                    part.proc.pid,
                    code,
                    uptime,
                    delay,
                )
            elif now >= part.restart_due:
                part.restarts += 1
                self._spawn(part.name, part.argv, part.niceness)
                log.warning("restarted %s (pid %s, restart %d)", part.name, part.proc.pid, part.restarts)

    def report(self, lines: int = 30) -> str:
        """Each part's process state and the end of its log: what a test prints when the stack let it down."""
        parts = []
        for name, proc in self.processes:
            code = proc.poll()
            state = "running" if code is None else f"exited with code {code}"
            parts.append(f"--- {name} (pid {proc.pid}): {state}")
            log_file = self.config.log_dir / f"{name}.log" if self.config.log_dir else None
            if log_file is not None and log_file.exists():
                with log_file.open("rb") as f:
                    f.seek(max(0, log_file.stat().st_size - 200 * lines))  # enough bytes for `lines` lines
                    tail = f.read().decode("utf-8", "replace").splitlines()[-lines:]
                parts.extend(tail)
        return "\n".join(parts)

    def _spawn(self, name: str, argv: list[str], niceness: int = 0) -> None:
        out = self._log_file(name)
        # Own session: Ctrl-C reaches only this runner, which then stops the parts in order
        # (API first, so in-flight requests finish). argv is ours, never from input.
        command = [*self.launcher, *argv]
        proc = subprocess.Popen(  # noqa: S603
            ["nice", "-n", str(niceness), *command] if niceness else command,
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if niceness:
            _nice_session(proc.pid, niceness)
        part = next((p for p in self.parts if p.name == name), None)
        if part is None:
            self.parts.append(Part(name, argv, niceness, proc, time.monotonic()))
        else:  # a restart: the part keeps its place in the stop order
            part.proc, part.started_at, part.restart_due = proc, time.monotonic(), None
        log.info("started %s (pid %s)", name, proc.pid)

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run(argv, cwd=PROJECT_ROOT, env=self.env, capture_output=True, text=True, timeout=300)  # noqa: S603
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[1:])} failed:\n{result.stdout}\n{result.stderr}")

    def _log_file(self, name: str) -> IO[bytes] | None:
        """Where a child writes: its own file under log_dir, or this terminal."""
        if self.config.log_dir is None:
            return None
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        return (self.config.log_dir / f"{name}.log").open("ab")

    def _wait_http(self, url: str, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive(name)
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{name} not healthy at {url} after {timeout:.0f} s")

    def _check_alive(self, part: str) -> None:
        """The part being started has not exited. Another part that dies meanwhile (a worker killed while
        the gateway starts) is not a failed start: the supervisor restarts it once the stack is up."""
        for name, proc in self.processes:
            if name == part and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}")


def _nice_session(pid: int, niceness: int) -> None:
    """Give the part's session the niceness too. Linux schedules each session as one group
    (autogroup, on by default) and a process's nice value then ranks it only within its session:
    a part in a session of its own (as here) with `nice` alone competes with the API as an equal,
    however many threads it has. Writing the session's own nice value restores the intent."""
    with contextlib.suppress(OSError):  # no autogroup (other kernels, containers): plain nice applies
        Path(f"/proc/{pid}/autogroup").write_text(str(niceness))


# How Prefect's background services take events off the broker and write them: in batches.
# Prefect 3.8.8 records task runs one event per transaction (batch 1) and reads one message per
# broker round trip; each publish sends about a dozen task-run events, so a burst of 100 was
# ~1,200 single-row transactions. Batches of up to 100, flushed at least every second (Prefect's
# default 5 s), keep the UI as current as it was. Whole seconds only: the task run recorder
# truncates its interval to an int, and 0 makes its flush loop spin (a core, seen here).
EVENT_BATCHES = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "1",
}


def _prefect_on_redis(url: str) -> dict[str, str]:
    """Prefect's settings for a server whose messaging, caches, leases and service coordination
    (Docket) live in Redis (prefect-redis), as Prefect's guide to scaling a self-hosted server
    has them. Events then reach the background services through Redis streams, so the API server
    answers workers and the API without processing events itself."""
    return {
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_URL": url,
        "PREFECT_SERVER_DOCKET_URL": url,
        "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",  # the stack migrates once, before the processes start
    }


def main() -> None:
    """Run the stack in the foreground until Ctrl-C."""
    settings = get_settings()
    development = settings.environment is Environment.DEVELOPMENT
    configure_logging(settings.log_level, resolve_format(settings.log_format, development))
    api, local = settings.api, StackSettings()
    config = StackConfig(
        api_port=api.port,
        host=api.host,
        prefect_port=local.prefect_port,
        prefect_home=local.prefect_home,
        gateway_port=settings.gateway.port,
    )
    stack = Stack(config)

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Explicit for SIGINT too: a runner started in the background inherits SIGINT ignored.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        stack.start()
        log.info(
            "API on %s (docs %s/docs), gateway on %s, Prefect UI on http://%s:%s — Ctrl-C stops everything",
            stack.config.api_url,
            stack.config.api_url,
            stack.config.gateway_url,
            stack.config.host,
            stack.config.prefect_port,
        )
        while True:
            stack.supervise()
            time.sleep(0.5)
    except KeyboardInterrupt:
        log.info("shutting down")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
