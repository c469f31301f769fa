"""The stack runner starts batch parts at a lower CPU priority than the API, in a way Linux honours."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from deployments.stack import Stack, StackConfig

AUTOGROUP = Path("/proc/self/autogroup")


def niceness_of(pid: int) -> tuple[int, int | None]:
    """(the process's nice value, its session's autogroup nice value or None without autogroup)."""
    nice = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
    try:
        match = re.search(r"nice (-?\d+)", Path(f"/proc/{pid}/autogroup").read_text())
    except OSError:
        return nice, None
    return nice, int(match.group(1)) if match else None


def test_a_niced_part_is_niced_in_its_own_session_too(tmp_path: Path) -> None:
    if not AUTOGROUP.exists():
        pytest.skip("no autogroup on this kernel: plain nice applies")
    stack = Stack(StackConfig(log_dir=tmp_path))
    stack._spawn("batch", ["sleep", "30"], niceness=7)
    stack._spawn("interactive", ["sleep", "30"])
    try:
        (_, batch), (_, interactive) = stack.processes
        assert os.getsid(batch.pid) != os.getsid(0), "a session of its own (Ctrl-C reaches only the runner)"
        deadline = time.monotonic() + 10
        while niceness_of(batch.pid)[0] != 7:  # `nice -n 7` sets it just before it execs the command
            assert time.monotonic() < deadline, f"never niced: {niceness_of(batch.pid)}"
            time.sleep(0.01)
        assert niceness_of(batch.pid) == (7, 7), "process and session both niced"
        assert niceness_of(interactive.pid) == (0, 0)
    finally:
        for _, proc in stack.processes:
            proc.kill()
            proc.wait()
