"""Two hubs on one PostgreSQL are one market for a web page too: the example page, connected to hub
A in Chromium (Debian's, driven by Playwright), rents a container of a real provider connected to
hub B, sends a file, runs a command and reads the file back, all through hub A's link to hub B."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from playwright.sync_api import ConsoleMessage, sync_playwright

from tests.conftest import Cluster, containers_of, started
from tests.docker.test_browser import CHROMIUM, CHROMIUM_ARGS, PAGE
from tests.site import serve

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]


@pytest.fixture
def site() -> Iterator[str]:
    """``/`` is the example page; ``/kiln-client/...`` is js-client/src."""
    with serve({"/": (PAGE.read_bytes(), "text/html")}) as url:
        yield url


def test_a_web_page_on_one_hub_rents_a_provider_on_another(
    tmp_path: Path, busybox_image: str, postgres_url: str, site: str
) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    suffix = f"-{secrets.token_hex(3)}"
    hub = ("--db", postgres_url, "--grace", "30")
    with (
        started(Cluster(tmp_path / "a", suffix=suffix), *hub) as a,
        started(Cluster(tmp_path / "b", suffix=suffix), *hub) as b,
    ):
        provider = b.start_provider("pfar", cpus=1, memory="1GiB")
        a.wait_for_providers({provider})  # hub A sells it once it has read it from the database
        console: list[str] = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()

                def keep(message: ConsoleMessage) -> None:
                    console.append(f"{message.type}: {message.text}")

                page.on("console", keep)
                page.goto(f"{site}/?{urlencode({'hub': a.url, 'autorun': '1'})}")
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
        assert (output, exit_code, shown_provider) == ("hello from a kiln container\nLinux\n23\n", "0", provider)
        assert containers_of(provider) == [], "the page released its container"
        assert a.hub is not None and f"linked to provider {provider!r}" in a.hub.output(), "not through A's link"
