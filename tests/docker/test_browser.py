"""The browser requestor: Chromium (Debian's, driven by Playwright) opens a page served
locally that imports kiln-client's browser entry, rents a container on a real provider,
runs a command and shows its output; the test reads the output from the page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from kiln.testing import LocalCluster
from tests.conftest import Cluster, containers_of
from tests.site import page_run, serve

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "examples" / "browser.html"


@pytest.fixture
def site() -> Iterator[str]:
    """``/`` is the example page; ``/kiln-client/...`` is js-client/src."""
    with serve({"/": (PAGE.read_bytes(), "text/html")}) as url:
        yield url


def test_a_web_page_rents_a_container_and_shows_the_output(cluster: Cluster, site: str) -> None:
    provider = cluster.start_provider("pweb", cpus=1, memory="1GiB")
    query = urlencode({"hub": cluster.url, "autorun": "1"})
    shown, console = page_run(f"{site}/?{query}", ["output", "exit-code", "provider"])
    assert shown["status"] == "done (23 bytes came back)", f"{shown['status']}\nconsole: {console}"
    assert shown["output"] == "hello from a kiln container\nLinux\n23\n"
    assert shown["exit-code"] == "0"
    assert shown["provider"] == provider
    assert containers_of(provider) == [], "the page released its container"


def test_the_browser_entry_refuses_a_hub_that_is_not_there(site: str) -> None:
    query = urlencode({"hub": "ws://127.0.0.1:9", "autorun": "1"})
    shown, _ = page_run(f"{site}/?{query}", [])
    assert shown["status"].startswith("failed [connection_closed]"), shown["status"]


def test_the_browser_entry_given_two_hubs_joins_the_one_that_answers(tmp_path: Path, site: str) -> None:
    with LocalCluster(tmp_path) as cluster:
        hub = cluster.start_hub()  # no provider: a rent there fails with no_match, once joined
        query = urlencode({"hub": f"ws://127.0.0.1:9,{hub}", "autorun": "1"})
        shown, _ = page_run(f"{site}/?{query}", [])
    assert shown["status"].startswith("failed [no_match]"), shown["status"]
