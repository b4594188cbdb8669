"""Two hubs on one PostgreSQL are one market for a web page too: the example page, connected to hub
A in Chromium (Debian's, driven by Playwright), rents a container of a real provider connected to
hub B, sends a file, runs a command and reads the file back, all through hub A's link to hub B."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.conftest import Cluster, containers_of, started
from tests.docker.test_browser import PAGE
from tests.site import page_run, serve

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]


@pytest.fixture
def site() -> Iterator[str]:
    """``/`` is the example page; ``/kiln-client/...`` is js-client/src."""
    with serve({"/": (PAGE.read_bytes(), "text/html")}) as url:
        yield url


def test_a_web_page_on_one_hub_rents_a_provider_on_another(
    tmp_path: Path, busybox_image: str, postgres_url: str, site: str
) -> None:
    suffix = f"-{secrets.token_hex(3)}"
    hub = ("--db", postgres_url, "--grace", "30")
    with (
        started(Cluster(tmp_path / "a", suffix=suffix), *hub) as a,
        started(Cluster(tmp_path / "b", suffix=suffix), *hub) as b,
    ):
        provider = b.start_provider("pfar", cpus=1, memory="1GiB")
        a.wait_for_providers({provider})  # hub A sells it once it has read it from the database
        query = urlencode({"hub": a.url, "autorun": "1"})
        shown, console = page_run(f"{site}/?{query}", ["output", "exit-code", "provider"])
        assert shown["status"] == "done (23 bytes came back)", f"{shown['status']}\nconsole: {console}"
        outcome = (shown["output"], shown["exit-code"], shown["provider"])
        assert outcome == ("hello from a kiln container\nLinux\n23\n", "0", provider)
        assert containers_of(provider) == [], "the page released its container"
        assert a.hub is not None and f"linked to provider {provider!r}" in a.hub.output(), "not through A's link"
