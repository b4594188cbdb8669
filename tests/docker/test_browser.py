"""The browser requestor: Chromium (Debian's, driven by Playwright) opens a page served
locally that imports kiln-client's browser entry, rents a container on a real provider,
runs a command and shows its output; the test reads the output from the page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from playwright.sync_api import ConsoleMessage, sync_playwright

from kiln.testing import LocalCluster
from tests.conftest import Cluster, containers_of
from tests.site import serve

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "examples" / "browser.html"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def site() -> Iterator[str]:
    """``/`` is the example page; ``/kiln-client/...`` is js-client/src."""
    with serve({"/": (PAGE.read_bytes(), "text/html")}) as url:
        yield url


@pytest.fixture
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    return CHROMIUM


def test_a_web_page_rents_a_container_and_shows_the_output(cluster: Cluster, site: str, chromium_path: Path) -> None:
    provider = cluster.start_provider("pweb", cpus=1, memory="1GiB")
    query = urlencode({"hub": cluster.url, "autorun": "1"})
    console: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()

            def keep(message: ConsoleMessage) -> None:
                console.append(f"{message.type}: {message.text}")

            page.on("console", keep)
            page.goto(f"{site}/?{query}")
            page.wait_for_function(
                "() => /^(done|failed)/.test(document.getElementById('status').textContent)", timeout=60_000
            )
            status = page.text_content("#status")
            output = page.text_content("#output")
            exit_code = page.text_content("#exit-code")
            shown_provider = page.text_content("#provider")
        finally:
            browser.close()
    assert status == "done (23 bytes came back)", f"{status}\nconsole: {console}"
    assert output == "hello from a kiln container\nLinux\n23\n"
    assert exit_code == "0"
    assert shown_provider == provider
    assert containers_of(provider) == [], "the page released its container"


def test_the_browser_entry_refuses_a_hub_that_is_not_there(site: str, chromium_path: Path) -> None:
    query = urlencode({"hub": "ws://127.0.0.1:9", "autorun": "1"})
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{site}/?{query}")
            page.wait_for_function("() => document.getElementById('status').textContent.startsWith('failed')")
            status = page.text_content("#status") or ""
        finally:
            browser.close()
    assert status.startswith("failed [connection_closed]"), status


def test_the_browser_entry_given_two_hubs_joins_the_one_that_answers(
    tmp_path: Path, site: str, chromium_path: Path
) -> None:
    with LocalCluster(tmp_path) as cluster:
        hub = cluster.start_hub()  # no provider: a rent there fails with no_match, once joined
        query = urlencode({"hub": f"ws://127.0.0.1:9,{hub}", "autorun": "1"})
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(f"{site}/?{query}")
                page.wait_for_function("() => document.getElementById('status').textContent.startsWith('failed')")
                status = page.text_content("#status") or ""
            finally:
                browser.close()
    assert status.startswith("failed [no_match]"), status
