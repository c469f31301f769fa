"""Fault injection for tests: our own Redis server, a cuttable TCP path, PostgreSQL connection drops.

Everything here acts only on what the test started itself (a redis-server child, a proxy
thread) or on the backends of the test's own database; shared servers are never signalled.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TypeVar

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.support.services import CI, free_port

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll until `probe` returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


# PostgreSQL ------------------------------------------------------------------------------------


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def terminate_backends(url: str, keep: Iterable[int] = ()) -> int:
    """pg_terminate_backend every connection to `url`'s database (and only it) except `keep`;
    returns how many were terminated."""
    database = make_url(url).database
    with psycopg.connect(_dsn(url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid() AND NOT (pid = ANY(%s))",
            (database, list(keep)),
        ).fetchall()
    return sum(1 for (done,) in rows if done)


def lock_waiters(url: str) -> list[int]:
    """Backends of `url`'s database waiting for a row or table lock."""
    database = make_url(url).database
    with psycopg.connect(_dsn(url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'", (database,)
        ).fetchall()
    return [pid for (pid,) in rows]


class RowLock:
    """Holds `SELECT ... FOR UPDATE` on one row in its own connection until released."""

    def __init__(self, url: str, table: str, row_id: str) -> None:
        self._conn = psycopg.connect(_dsn(url))
        # table is one of ours, never input
        self._conn.execute(f"SELECT 1 FROM {table} WHERE id = %s FOR UPDATE", (row_id,))
        self.pid: int = self._conn.info.backend_pid

    def release(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self._conn.rollback()
        self._conn.close()


# Redis -------------------------------------------------------------------------------------------


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        message = "redis-server is not installed"
        if CI:
            pytest.fail(message + " (CI=true: required)")
        pytest.skip(message)
    return path


class RedisServer:
    """A throw-away redis-server on a loopback port (no persistence): stop, pause and restart it
    on the same port. Only this child process is ever signalled."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        argv = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no"]
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self._process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"redis-server did not answer on port {self.port} within {timeout} s")

    def stop(self) -> None:
        """SIGTERM (after a SIGCONT, in case it is paused) and wait for the exit."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def pause(self) -> None:
        """SIGSTOP: connections are still accepted by the kernel, nothing is answered (a hung server)."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGCONT)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


# A TCP path that can be cut --------------------------------------------------------------------


class TcpProxy:
    """Forwards a loopback port to `target`; `stop()` closes the listener and every connection
    (what a client sees when the server goes away) and `start()` opens the same port again.
    With `swallow_responses` the requests reach the target but no answer comes back."""

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self.swallow_responses = False
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name="tcp-proxy").start()
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, response: bool) -> None:
        try:
            while data := source.recv(65536):
                if not (response and self.swallow_responses):
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
