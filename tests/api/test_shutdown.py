"""Graceful shutdown: the API served as the stack serves it, stopped with SIGTERM mid-request.

uvicorn runs in a subprocess on a free loopback port with the stack's own command line
(deployments.stack.uvicorn_argv); the app is the real one plus a test-only slow route.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.settings import PROJECT_ROOT
from deployments.stack import Stack, StackConfig, uvicorn_argv
from storage.migrate import upgrade
from tests.support.services import free_port
from tests.support.slow_app import SLOW_PATH

HOST = "127.0.0.1"
# uvicorn finishes its graceful shutdown and then re-raises the signal it caught, so a clean stop
# by SIGTERM ends "terminated by SIGTERM" (143 in a shell), which supervisors count as a normal stop.
CLEAN_EXIT = (0, -signal.SIGTERM)


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    grace: float

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_lines(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.strip()]


@dataclass
class InFlight:
    """A request made from a thread, with its outcome once it ends."""

    thread: threading.Thread
    response: httpx.Response | None = None
    error: BaseException | None = None
    finished_at: float | None = None
    done: threading.Event = field(default_factory=threading.Event)


def start_server(tmp_path: Path, grace: float) -> Server:
    database = f"sqlite:///{tmp_path / 'marketplace.db'}"
    upgrade(database)
    port = free_port()
    env = {
        **os.environ,
        "MARKETPLACE_DATABASE__URL": database,
        "MARKETPLACE_LOG_FORMAT": "json",
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    log = tmp_path / "api.log"
    argv = uvicorn_argv("tests.support.slow_app:create_slow_app", HOST, port, grace, factory=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(proc, port, log, grace)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"uvicorn exited early:\n{log.read_text()}"
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(f"the API did not start:\n{log.read_text()}")


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[list[Server]]:
    servers: list[Server] = []
    yield servers
    for server in servers:  # only the processes this test started, by their pid
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def slow_request(url: str, seconds: float) -> InFlight:
    holder = InFlight(thread=threading.Thread(target=lambda: None))

    def run() -> None:
        try:
            holder.response = httpx.get(f"{url}{SLOW_PATH}", params={"seconds": seconds}, timeout=60)
        except BaseException as exc:
            holder.error = exc
        finally:
            holder.finished_at = time.monotonic()
            holder.done.set()

    holder.thread = threading.Thread(target=run, daemon=True)
    holder.thread.start()
    return holder


def wait_in_flight(server: Server, at_least: int) -> None:
    """Until the server counts `at_least` requests in progress (this scrape is one of them)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = httpx.get(f"{server.url}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            if family.name == "marketplace_requests_in_progress" and family.samples[0].value >= at_least:
                return
        time.sleep(0.05)
    raise TimeoutError("the slow request never arrived")


def refused(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_finishes_the_in_flight_request_refuses_new_ones_and_exits_cleanly(
    tmp_path: Path, server_factory: list[Server]
) -> None:
    server = start_server(tmp_path, grace=15)
    server_factory.append(server)
    in_flight = slow_request(server.url, seconds=3)
    wait_in_flight(server, at_least=2)

    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 3
    while not refused(server.port):
        assert time.monotonic() < deadline, "new connections are still accepted after SIGTERM"
        time.sleep(0.05)
    assert not in_flight.done.is_set(), "the slow request should still be running when connections are refused"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/health", timeout=2)

    assert in_flight.done.wait(timeout=15)
    assert in_flight.error is None, in_flight.error
    assert in_flight.response is not None
    assert in_flight.response.status_code == 200
    assert in_flight.response.json() == {"slept": 3}
    assert server.proc.wait(timeout=server.grace) in CLEAN_EXIT
    assert time.monotonic() - signalled < server.grace

    records = [json.loads(line) for line in server.log_lines()]  # every line is JSON, uvicorn's too
    access = [r for r in records if r["logger"] == "marketplace.access" and r["route"] == SLOW_PATH]
    assert [(r["status"], r["request_id"]) for r in access] == [(200, in_flight.response.headers["x-request-id"])]
    messages = [r["message"] for r in records if r["logger"].startswith("uvicorn")]
    assert "Shutting down" in messages
    assert any(m.startswith("Finished server process") for m in messages)
    assert not any(r["logger"] == "uvicorn.access" for r in records)  # one access line per request: ours


def test_a_request_outliving_the_grace_period_is_cut_and_the_process_still_exits(
    tmp_path: Path, server_factory: list[Server]
) -> None:
    server = start_server(tmp_path, grace=1)
    server_factory.append(server)
    in_flight = slow_request(server.url, seconds=30)
    wait_in_flight(server, at_least=2)

    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=10) in CLEAN_EXIT
    assert time.monotonic() - signalled < server.grace + 3
    assert in_flight.done.wait(timeout=5)
    assert in_flight.response is None or in_flight.response.status_code >= 500
    messages = [json.loads(line)["message"] for line in server.log_lines()]
    assert any("timeout graceful shutdown exceeded" in m for m in messages)


def test_the_stack_sends_sigterm_first_and_kills_only_after_the_grace_period(tmp_path: Path) -> None:
    """A part that exits on SIGTERM is not killed; one that ignores SIGTERM is, after the wait."""
    script = (
        "import signal, sys, time\n"
        "mode = sys.argv[1]\n"
        "handler = signal.SIG_IGN if mode == 'ignore' else (lambda *_: sys.exit(7))\n"
        "signal.signal(signal.SIGTERM, handler)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    config = StackConfig(prefect_home=tmp_path / "prefect", log_dir=tmp_path / "logs", stop_timeout_seconds=1)
    stack = Stack(config)
    stack._spawn("polite", [sys.executable, "-c", script, "exit"])
    stack._spawn("stubborn", [sys.executable, "-c", script, "ignore"])
    processes = dict(stack.processes)
    for name in processes:
        log = tmp_path / "logs" / f"{name}.log"
        deadline = time.monotonic() + 10
        while "ready" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline
            time.sleep(0.05)

    started = time.monotonic()
    stack.stop()
    assert processes["polite"].returncode == 7  # its SIGTERM handler ran: not killed
    assert processes["stubborn"].returncode == -signal.SIGKILL
    assert 1 <= time.monotonic() - started < 10
