"""Headless Chromium driven over the DevTools protocol: open a page, read its text, take a screenshot.

Small on purpose: the Prefect UI is a single-page app that renders after its own API calls, so
the check waits for text to appear rather than for a load event, which `--dump-dom` cannot do.
Chromium runs with a profile of its own that is removed afterwards, with its background services
off, and with every host but the one under test sent to a closed loopback port: the page can
reach nothing else.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from websockets.sync.client import connect
from websockets.sync.connection import Connection

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
START_SECONDS = 30.0
CALL_SECONDS = 30.0
# Without the background-networking flags Chromium tries outbound connections on start-up.
FLAGS = (
    "--headless",
    "--no-sandbox",  # runs as root in CI containers, where the sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def find_chromium() -> str | None:
    """The browser to run: `MARKETPLACE_CHROMIUM` if set, else the first candidate on PATH."""
    configured = os.environ.get("MARKETPLACE_CHROMIUM")
    if configured:
        return configured
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


class Page:
    """One browser tab, spoken to over its DevTools websocket."""

    def __init__(self, socket: Connection) -> None:
        self._socket = socket
        self._next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events that arrive meanwhile are dropped)."""
        self._next_id += 1
        self._socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        deadline = time.monotonic() + CALL_SECONDS
        while True:
            message = json.loads(self._socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") != self._next_id:
                continue
            if "error" in message:
                raise RuntimeError(f"{method}: {message['error']}")
            result: dict[str, Any] = message.get("result", {})
            return result

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        reply = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"script failed: {reply['exceptionDetails'].get('text')}")
        return reply.get("result", {}).get("value")

    def text(self) -> str:
        """What a person reads on the page (the body's rendered text)."""
        return str(self.evaluate("document.body ? document.body.innerText : ''") or "")

    def wait_for_text(self, wanted: list[str], timeout: float) -> list[str]:
        """Poll the page's text until every string in `wanted` shows; returns those still missing."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.text()
            missing = [w for w in wanted if w not in shown]
            if not missing or time.monotonic() >= deadline:
                return missing
            time.sleep(0.5)

    def screenshot(self, path: Path) -> Path:
        """A PNG of the visible part of the page."""
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path


class Browser:
    """A headless Chromium process with a throw-away profile; `page()` gives its first tab."""

    def __init__(self, executable: str, allowed_host: str, window: tuple[int, int] = (1440, 1100)) -> None:
        self._executable = executable
        self._allowed_host = allowed_host
        self._window = window
        self._profile = Path()
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Browser:
        self._profile = Path(tempfile.mkdtemp(prefix="ui-check-profile-"))
        argv = [
            self._executable,
            *FLAGS,
            f"--user-data-dir={self._profile}",
            f"--window-size={self._window[0]},{self._window[1]}",
            # Everything but the UI's own host goes to a closed port (loopback stays direct).
            "--proxy-server=http://127.0.0.1:9",
            f"--proxy-bypass-list={self._allowed_host}",
            "about:blank",
        ]
        # A session of its own: Chromium's helper processes are stopped with it, as a group.
        self._process = subprocess.Popen(  # noqa: S603
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._stop(self._process)
        shutil.rmtree(self._profile, ignore_errors=True)

    @staticmethod
    def _stop(process: subprocess.Popen[bytes]) -> None:
        """SIGTERM to Chromium's group, up to 10 s to exit, then SIGKILL to any helper left (which would
        write into the profile). Chromium is reaped last: until then its group id cannot be reused."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _exited(process.pid):
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    @contextmanager
    def page(self) -> Iterator[Page]:
        """The browser's tab, connected over DevTools (waits for Chromium to be ready)."""
        port = self._devtools_port()
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=CALL_SECONDS).json()
        url = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
        with connect(url, max_size=None, open_timeout=CALL_SECONDS) as socket:
            yield Page(socket)

    def _devtools_port(self) -> int:
        """Chromium writes the port it chose into the profile once DevTools listen."""
        marker = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"{self._executable} exited with code {self._process.returncode}")
            if marker.exists() and (lines := marker.read_text().split()):
                return int(lines[0])
            time.sleep(0.1)
        raise RuntimeError(f"{self._executable} did not open DevTools within {START_SECONDS:.0f} s")


def _exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def host_of(url: str) -> str:
    """The host a URL names (what the browser may reach directly)."""
    return urlsplit(url).hostname or "127.0.0.1"
