"""The stack runner's supervisor: a part that dies is restarted after a backoff, and logged."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest

from deployments.stack import RESTART_RESET_SECONDS, Stack, StackConfig


def _kill(stack: Stack, name: str) -> None:
    part = next(p for p in stack.parts if p.name == name)
    os.kill(part.proc.pid, signal.SIGKILL)
    part.proc.wait()


def test_a_dead_part_is_restarted_with_a_growing_backoff(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stack = Stack(StackConfig(log_dir=tmp_path))
    stack._spawn("worker", ["sleep", "60"])
    try:
        first = stack.pid_of("worker")
        started = stack.parts[0].started_at
        _kill(stack, "worker")
        with caplog.at_level(logging.INFO, logger="marketplace.stack"):
            stack.supervise(now=started + 5)  # death seen: restart due 1 s later
            assert stack.pid_of("worker") == first
            stack.supervise(now=started + 5.5)
            assert stack.pid_of("worker") == first, "not before its backoff"
            stack.supervise(now=started + 6.1)
        second = stack.pid_of("worker")
        assert second != first
        assert stack.parts[0].proc.poll() is None, "the new process runs"
        assert f"worker (pid {first}) exited with code -9" in caplog.text
        assert f"restarted worker (pid {second}, restart 1)" in caplog.text

        _kill(stack, "worker")  # dies again at once: the next wait doubles
        restarted_at = stack.parts[0].started_at
        stack.supervise(now=restarted_at + 1)
        assert stack.parts[0].restart_due == pytest.approx(restarted_at + 3)
        stack.supervise(now=restarted_at + 3.1)
        assert stack.parts[0].restarts == 2

        _kill(stack, "worker")  # after a long healthy run, back to the first delay
        long_after = stack.parts[0].started_at + RESTART_RESET_SECONDS + 1
        stack.supervise(now=long_after)
        assert stack.parts[0].restart_due == pytest.approx(long_after + 1)
    finally:
        stack.stop()


def test_stopping_the_stack_stops_the_restarted_process(tmp_path: Path) -> None:
    stack = Stack(StackConfig(log_dir=tmp_path, stop_timeout_seconds=2))
    stack._spawn("relay", ["sleep", "60"])
    _kill(stack, "relay")
    t0 = stack.parts[0].started_at
    stack.supervise(now=t0 + 10)
    stack.supervise(now=t0 + 12)
    proc = stack.parts[0].proc
    assert proc.poll() is None
    stack.stop()
    assert proc.poll() is not None
    assert stack.parts == []


def test_a_part_dying_while_another_starts_is_left_to_the_supervisor(tmp_path: Path) -> None:
    """A worker killed while the stack waits for the gateway's health does not fail the start (the
    supervisor restarts the worker once the stack is up); the part being waited for dying does."""
    stack = Stack(StackConfig(log_dir=tmp_path))
    stack._spawn("worker", ["sleep", "60"])
    stack._spawn("gateway", ["sleep", "60"])
    try:
        _kill(stack, "worker")
        with pytest.raises(TimeoutError, match="gateway not healthy"):  # waited for; nothing listens there
            stack._wait_http("http://127.0.0.1:9/health", "gateway", timeout=1)
        _kill(stack, "gateway")
        with pytest.raises(RuntimeError, match="gateway exited with code -9"):
            stack._wait_http("http://127.0.0.1:9/health", "gateway", timeout=5)
    finally:
        stack.stop()
