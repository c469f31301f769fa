"""The headless Chromium driver the Prefect UI check uses, against a local page (no Prefect server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments import ui_check
from deployments.headless import Browser, find_chromium
from tests.support.loopback_http import LoopbackHTTPServer, Reply
from tests.support.services import CI

# Renders its text late, as a single-page app does after its API calls.
PAGE = b"""<!doctype html><html><body><h1>loading</h1><script>
setTimeout(() => { document.querySelector('h1').textContent = 'publish acme/chat-pro 1.2.0'; }, 300);
</script></body></html>"""


@pytest.fixture
def page_url() -> Iterator[str]:
    with LoopbackHTTPServer(lambda _: Reply(200, PAGE, {"Content-Type": "text/html"}), methods=("GET",)) as server:
        yield f"{server.url}/runs/flow-run/x"


@pytest.fixture
def chromium() -> str:
    found = find_chromium()
    if found is None:
        if CI:
            pytest.fail("Chromium is not installed (CI=true: required; .ci/run installs it)")
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    return found


def test_text_rendered_late_is_waited_for_and_absent_text_reported(
    chromium: str, page_url: str, tmp_path: Path
) -> None:
    with Browser(chromium, "127.0.0.1") as browser, browser.page() as page:
        page.open(page_url)
        assert page.wait_for_text(["publish acme/chat-pro 1.2.0"], timeout=20) == []
        assert page.wait_for_text(["publish acme/chat-pro 1.2.0", "not on the page"], timeout=1) == ["not on the page"]
        shot = page.screenshot(tmp_path / "page.png")
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_the_check_says_when_no_chromium_is_installed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MARKETPLACE_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", "")
    assert ui_check.main(["00000000-0000-0000-0000-000000000000"]) == 2
    assert "apt-get install chromium" in capsys.readouterr().out
