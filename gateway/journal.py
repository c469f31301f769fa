"""A local append-only journal of usage records: where records go when Redis cannot take them.

Each process appends to a segment file of its own and holds an exclusive `flock` on it while it
is open, so a writer can tell a live process's segment (locked) from a dead one's (lockable).
Appends are grouped (one write and one fsync for every record that arrived meanwhile) and
complete before the calls' answers do. The writer replays closed and orphaned segments into the
database and deletes a segment only after its rows are committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

SUFFIX = ".journal"


class Journal:
    """This process's current segment; `rotate` closes it so that the writer may replay it."""

    def __init__(self, folder: Path, fsync: bool = True) -> None:
        self.folder = folder
        self.fsync = fsync
        self._fd: int | None = None
        self.path: Path | None = None
        self.appended = 0  # records in the current segment
        self._lock = threading.Lock()  # appends run in worker threads; rotation on the event loop

    def _open(self) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / f"usage-{os.getpid()}-{time.time_ns()}{SUFFIX}"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._fd = fd
        self.appended = 0
        return fd

    def append(self, lines: list[bytes]) -> None:
        """Write the records (one JSON object a line) durably; blocking: call it off the event loop."""
        with self._lock:
            self._append(lines)

    def _append(self, lines: list[bytes]) -> None:
        fd = self._fd if self._fd is not None else self._open()
        data = b"".join(line + b"\n" for line in lines)
        while data:
            written = os.write(fd, data)
            data = data[written:]
        if self.fsync:
            os.fsync(fd)
        self.appended += len(lines)

    def rotate(self) -> None:
        """Close the current segment (it becomes replayable); the next append opens a new one."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)  # closing releases the lock
                self._fd = None


async def rotate_forever(journal: Journal, seconds: float = 1.0) -> None:
    """Close the current segment every `seconds` when it holds records, so writers can replay them."""
    while True:
        await asyncio.sleep(seconds)
        if journal.appended:
            journal.rotate()


@contextlib.contextmanager
def claimed_segments(folder: Path) -> Iterator[list[tuple[Path, int]]]:
    """The segments nobody holds (closed, or left by a dead process), locked for this caller."""
    claimed: list[tuple[Path, int]] = []
    try:
        for path in sorted(folder.glob(f"*{SUFFIX}")) if folder.exists() else []:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # replayed and removed by another writer meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # a live process is appending to it
                continue
            claimed.append((path, fd))
        yield claimed
    finally:
        for _, fd in claimed:
            os.close(fd)


def read_segment(fd: int) -> list[bytes]:
    """The complete lines of a segment (a torn last line, from a crash mid-write, is skipped)."""
    with os.fdopen(os.dup(fd), "rb") as f:
        f.seek(0)
        return [line for line in f.read().split(b"\n")[:-1] if line.strip()]
