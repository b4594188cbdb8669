"""Ports of a container from a browser (protocol 1.7), end to end: a hub process, a provider
process, a real container running busybox's httpd on its loopback, and Chromium (Debian's,
driven by Playwright).

A page served locally imports kiln-client's browser entry, rents a container, starts the server
in it and talks to its port through ``act.connect``: once with the WebSocket-like events, once
with ``read()``/``write()``. Then a port published from Python (``act.publish``) is opened in
Chromium as a plain URL, and is gone (404) once revoked."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlencode

import pytest
from playwright.async_api import async_playwright

import kiln
from kiln.requestor.activity import Activity
from kiln.testing import listening
from tests.conftest import IMAGE, Cluster, containers_of
from tests.site import CHROMIUM, CHROMIUM_ARGS, page_run, serve

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

SERVED = "<h1>served from a kiln container</h1>\n"
HTTPD = ["httpd", "-f", "-p", "8080", "-h", "/golem/work"]

# The page: rent, start httpd (its run stays open until the page is done), then one HTTP request
# through a connect read as events and one through read()/write(); each answer goes in its element.
PAGE = b"""<!doctype html>
<meta charset="utf-8">
<p id="status">starting</p><pre id="events"></pre><pre id="promises"></pre><p id="provider"></p>
<script type="module">
import { ConnectionRefusedError, PortSocket, connect } from "/kiln-client/browser.js";

const show = (id, text) => { document.getElementById(id).textContent = text; };
const params = new URLSearchParams(location.search);
const request = "GET /index.html HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n";

/** The answer of one request through a connect read as a WebSocket's events. */
async function byEvents(act) {
  const sock = await act.connect(8080);
  if (!(sock instanceof PortSocket) || sock.readyState !== sock.OPEN) throw new Error("not an open PortSocket");
  sock.binaryType = "arraybuffer";
  const parts = [];
  const decoder = new TextDecoder();
  const closed = new Promise((resolve, reject) => {
    sock.onmessage = (event) => parts.push(decoder.decode(event.data, { stream: true }));
    sock.onerror = (event) => reject(event.error);
    sock.addEventListener("close", (event) => resolve(event));
  });
  await new Promise((resolve) => sock.addEventListener("open", resolve, { once: true }));
  sock.send(request);
  const event = await closed;
  return `${parts.join("")}[close ${event.code} clean=${event.wasClean}]`;
}

/** The answer of one request through read() and write(). */
async function byPromises(act) {
  const sock = await act.connect(8080);
  await sock.write(new TextEncoder().encode(request));
  const parts = [];
  const decoder = new TextDecoder();
  for (let chunk = await sock.read(); chunk !== null; chunk = await sock.read()) {
    parts.push(decoder.decode(chunk, { stream: true }));
  }
  sock.close();
  return parts.join("");
}

try {
  const requestor = await connect(params.get("hub"));
  const act = await requestor.rent({ image: params.get("image"), demand: { cpus: 0.5, memory: "128MiB" } });
  show("provider", act.provider);
  await act.sendBytes(params.get("page"), "/golem/work/index.html");
  const serving = new AbortController();
  act.run(["httpd", "-f", "-p", "8080", "-h", "/golem/work"], { signal: serving.signal }).catch(() => {});
  for (let i = 0; ; i++) {
    try {
      (await act.connect(8080)).abort();
      break;
    } catch (e) {
      if (!(e instanceof ConnectionRefusedError) || i > 100) throw e;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  show("events", await byEvents(act));
  show("promises", await byPromises(act));
  serving.abort();
  await act.release();
  await requestor.close();
  show("status", "done");
} catch (e) {
  show("status", `failed [${e.code}] ${e.message}`);
}
</script>
"""


@pytest.fixture
def site() -> Iterator[str]:
    """``/`` is the page above; ``/kiln-client/...`` is js-client/src."""
    with serve({"/": (PAGE, "text/html")}) as url:
        yield url


@pytest.fixture
def provider(cluster: Cluster) -> str:
    return cluster.start_provider("pport", cpus=1, memory="1GiB")


def test_a_page_talks_to_a_port_of_its_container(cluster: Cluster, provider: str, site: str) -> None:
    query = urlencode({"hub": cluster.url, "image": IMAGE, "page": SERVED})
    shown, console = page_run(f"{site}/?{query}", ["events", "promises", "provider"])
    assert shown["status"] == "done", f"{shown['status']}\nconsole: {console}"
    by_events, by_promises = shown["events"], shown["promises"]
    assert by_events.startswith("HTTP/1.0 200") or by_events.startswith("HTTP/1.1 200"), by_events
    assert by_events.endswith(f"{SERVED}[close 1000 clean=true]"), by_events
    assert by_promises.split(" ", 1)[1].startswith("200") and by_promises.endswith(SERVED), by_promises
    assert shown["provider"] == provider
    assert containers_of(provider) == [], "the page released its container"


@contextlib.asynccontextmanager
async def serving(act: Activity) -> AsyncIterator[None]:
    """httpd on port 8080 of ``act``'s container, serving :data:`SERVED`, until the block ends."""
    await act.send_bytes(SERVED.encode(), "/golem/work/index.html")
    server = asyncio.create_task(act.run(HTTPD))
    try:
        await listening(act, 8080, within=5.0)
        yield
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError, kiln.KilnError):
            await server


async def test_chromium_opens_a_port_published_from_python(cluster: Cluster, provider: str) -> None:
    async with (
        kiln.connect(cluster.url) as requestor,
        requestor.rent(IMAGE, kiln.Demand(cpus=0.5, memory="128MiB")) as act,
        serving(act),
    ):
        pub = await act.publish(8080)
        assert pub.url.endswith(f"/s/{pub.token}/")
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                shown = await page.goto(pub.url)
                assert shown is not None and shown.status == 200
                assert await page.text_content("h1") == SERVED.strip().removeprefix("<h1>").removesuffix("</h1>")
                await pub.revoke()
                gone = await page.goto(pub.url)
                assert gone is not None and gone.status == 404
            finally:
                await browser.close()
